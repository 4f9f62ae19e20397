package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// StartReplica starts a throwaway redis-server replicating primary, with
// the same extra arguments as primary plus args, and waits until its link
// to the primary is up. It skips the test without a redis-server binary.
func StartReplica(t testing.TB, primary *Server, args ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil || primary.Kind != KindProcess {
		t.Skip("redistest: a replica needs a redis-server binary")
	}
	// A full synchronisation starts at once, not after the default 5 s
	// wait for more replicas (every node gets it: a replica may be promoted).
	pc := redis.NewClient(&redis.Options{Addr: primary.Addr})
	err = pc.ConfigSet(context.Background(), "repl-diskless-sync-delay", "0").Err()
	pc.Close()
	if err != nil {
		t.Fatalf("redistest: primary at %s: %v", primary.Addr, err)
	}
	all := append(append([]string{}, primary.args...), args...)
	all = append(all, "--repl-diskless-sync-delay", "0")
	all = append(all, "--replicaof", "127.0.0.1", strconv.Itoa(primary.port))
	s := &Server{t: t, Kind: KindProcess, dir: t.TempDir(), args: all}
	s.startProcess(bin, 0)
	t.Cleanup(s.Stop)
	if !s.waitLinkUp(10 * time.Second) {
		t.Fatalf("redistest: the replica at %s did not reach its primary", s.Addr)
	}
	// The replica may say its link is up a moment before the primary
	// counts it online (and WAIT counts only those).
	if !primary.waitReplicaOnline(s.port, 10*time.Second) {
		t.Fatalf("redistest: the primary at %s never listed the replica at %s online", primary.Addr, s.Addr)
	}
	return s
}

// waitReplicaOnline waits until a primary lists the replica on port as
// online.
func (s *Server) waitReplicaOnline(port int, within time.Duration) bool {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	want := ",port=" + strconv.Itoa(port) + ",state=online,"
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		info, err := c.Info(context.Background(), "replication").Result()
		if err == nil && strings.Contains(info, want) {
			return true
		}
	}
	return false
}

// waitLinkUp waits until a replica reports its link to its primary up.
func (s *Server) waitLinkUp(within time.Duration) bool {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		info, err := c.Info(context.Background(), "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return true
		}
	}
	return false
}

// Pid is the redis-server's process id (0 when it is not running), so a
// test can freeze it with SIGSTOP.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Replicated is a primary, its replicas and the sentinels that watch them,
// all on loopback: the topology a failover test needs.
type Replicated struct {
	// Servers are the data nodes; Servers[0] is the first primary.
	Servers []*Server
	// Sentinels are the sentinels' addresses (host:port).
	Sentinels []string
	// MasterName is the name the sentinels monitor the primary under.
	MasterName string

	t testing.TB
}

// ReplicatedOptions shape a Replicated topology.
type ReplicatedOptions struct {
	// Replicas is how many replicas the primary gets (default 2).
	Replicas int
	// Sentinels is how many sentinels watch them (default 3); the quorum
	// is a majority of them.
	Sentinels int
	// DownAfter is how long a node is unreachable before a sentinel
	// thinks it down (default 1 s).
	DownAfter time.Duration
	// FailoverTimeout is the sentinels' failover-timeout (default 5 s).
	FailoverTimeout time.Duration
	// Args are extra redis-server arguments of every data node, e.g.
	// "--min-replicas-to-write", "1".
	Args []string
}

// StartReplicated starts a primary, its replicas and sentinels monitoring
// them under the name "gateway", and waits until every sentinel knows every
// replica and the other sentinels. It skips the test without a
// redis-server binary.
func StartReplicated(t testing.TB, o ReplicatedOptions) *Replicated {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redistest: a replicated topology needs a redis-server binary")
	}
	if o.Replicas == 0 {
		o.Replicas = 2
	}
	if o.Sentinels == 0 {
		o.Sentinels = 3
	}
	if o.DownAfter == 0 {
		o.DownAfter = time.Second
	}
	if o.FailoverTimeout == 0 {
		o.FailoverTimeout = 5 * time.Second
	}
	primary := StartWithArgs(t, o.Args...)
	r := &Replicated{Servers: []*Server{primary}, MasterName: "gateway", t: t}
	for range o.Replicas {
		r.Servers = append(r.Servers, StartReplica(t, primary))
	}
	quorum := o.Sentinels/2 + 1
	for range o.Sentinels {
		r.Sentinels = append(r.Sentinels, startSentinel(t, bin, primary.port, r.MasterName, quorum, o))
	}
	ctx := context.Background()
	for _, addr := range r.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: addr})
		ready := false
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && !ready; time.Sleep(50 * time.Millisecond) {
			reps, err1 := c.Replicas(ctx, r.MasterName).Result()
			sens, err2 := c.Sentinels(ctx, r.MasterName).Result()
			ready = err1 == nil && err2 == nil && len(reps) == o.Replicas && len(sens) == o.Sentinels-1
		}
		c.Close()
		if !ready {
			t.Fatalf("redistest: sentinel %s did not learn the topology", addr)
		}
	}
	return r
}

func startSentinel(t testing.TB, bin string, primaryPort int, name string, quorum int, o ReplicatedOptions) string {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	conf := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\n"+
		"sentinel monitor %s 127.0.0.1 %d %d\n"+
		"sentinel down-after-milliseconds %s %d\n"+
		"sentinel failover-timeout %s %d\n"+
		"sentinel parallel-syncs %s 1\n",
		port, dir, name, primaryPort, quorum, name, o.DownAfter.Milliseconds(), name, o.FailoverTimeout.Milliseconds(), name)
	path := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, path, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatalf("redistest: start sentinel: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if !waitReady(addr, 5*time.Second) {
		t.Fatalf("redistest: the sentinel at %s did not start", addr)
	}
	return addr
}

// PrimaryAddr is the primary's address as the first sentinel that
// answers names it.
func (r *Replicated) PrimaryAddr(ctx context.Context) (string, error) {
	var last error
	for _, addr := range r.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: addr})
		a, err := c.GetMasterAddrByName(ctx, r.MasterName).Result()
		c.Close()
		if err == nil && len(a) == 2 {
			return net.JoinHostPort(a[0], a[1]), nil
		}
		last = err
	}
	return "", fmt.Errorf("redistest: no sentinel names the primary: %v", last)
}

// Primary is the data node the sentinels name primary.
func (r *Replicated) Primary() *Server {
	r.t.Helper()
	addr, err := r.PrimaryAddr(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	for _, s := range r.Servers {
		if s.Addr == addr {
			return s
		}
	}
	r.t.Fatalf("redistest: the sentinels name %s, which is none of the data nodes", addr)
	return nil
}

// Failover asks a sentinel to fail over at once (SENTINEL FAILOVER), as an
// operator does for planned maintenance.
func (r *Replicated) Failover(ctx context.Context) error {
	c := redis.NewSentinelClient(&redis.Options{Addr: r.Sentinels[0]})
	defer c.Close()
	return c.Failover(ctx, r.MasterName).Err()
}

// WaitNewPrimary waits until every sentinel names a primary other than
// old and returns it.
func (r *Replicated) WaitNewPrimary(old *Server, within time.Duration) *Server {
	r.t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		agreed := ""
		for _, addr := range r.Sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: addr})
			a, err := c.GetMasterAddrByName(ctx, r.MasterName).Result()
			c.Close()
			if err != nil || len(a) != 2 {
				agreed = ""
				break
			}
			got := net.JoinHostPort(a[0], a[1])
			if got == old.Addr || (agreed != "" && got != agreed) {
				agreed = ""
				break
			}
			agreed = got
		}
		for _, s := range r.Servers {
			if agreed != "" && s.Addr == agreed {
				return s
			}
		}
	}
	r.t.Fatalf("redistest: the sentinels did not agree on a new primary within %s", within)
	return nil
}

// MajorVersion is the major version of the redis-server on PATH (0 when
// there is none or it does not say).
func MajorVersion() int {
	out, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		return 0
	}
	_, v, ok := strings.Cut(string(out), " v=")
	if !ok {
		return 0
	}
	major, _, _ := strings.Cut(v, ".")
	n, _ := strconv.Atoi(major)
	return n
}
