// Package redistest gives tests an isolated Redis: a throwaway redis-server
// on a free loopback port (so a test can stop and restart it to exercise
// faults), REDIS_URL when no binary exists, and in-process miniredis as the
// last resort.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/redisconf"
)

// Kind says which Redis a Server is.
type Kind string

// The kinds of Redis a test can get.
const (
	KindProcess   Kind = "redis-server"
	KindURL       Kind = "REDIS_URL"
	KindMiniredis Kind = "miniredis"
)

// Server is a Redis a test may use exclusively.
type Server struct {
	Kind Kind
	// Addr is host:port.
	Addr string
	// URL is a redis:// URL for Addr (with the database when REDIS_URL was used).
	URL string

	t    testing.TB
	mu   sync.Mutex
	cmd  *exec.Cmd
	port int
	dir  string
	mini *miniredis.Miniredis
	// cluster starts the server with cluster mode enabled.
	cluster bool
	// args are extra redis-server arguments (StartWithArgs).
	args []string
}

// Start returns a Redis for the test, stopped when the test ends. A
// redis-server binary on PATH is preferred; without one REDIS_URL is used
// (flushed first); without that, miniredis.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t}
	if bin, err := exec.LookPath("redis-server"); err == nil {
		s.Kind = KindProcess
		s.dir = t.TempDir()
		s.startProcess(bin, 0)
		t.Cleanup(s.Stop)
		return s
	}
	if u := os.Getenv("REDIS_URL"); u != "" {
		opt, err := redis.ParseURL(u)
		if err != nil {
			t.Fatalf("redistest: REDIS_URL: %v", err)
		}
		host, _, _ := net.SplitHostPort(opt.Addr)
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			t.Fatalf("redistest: REDIS_URL %q is not a loopback address; tests only use local Redis", opt.Addr)
		}
		c := redis.NewClient(opt)
		defer c.Close()
		if err := c.FlushDB(context.Background()).Err(); err != nil {
			t.Fatalf("redistest: REDIS_URL: %v", err)
		}
		s.Kind, s.Addr, s.URL = KindURL, opt.Addr, u
		return s
	}
	t.Log("redistest: no redis-server binary and no REDIS_URL: using in-process miniredis (fault tests will skip)")
	m := miniredis.RunT(t)
	s.Kind, s.mini, s.Addr, s.URL = KindMiniredis, m, m.Addr(), "redis://"+m.Addr()
	return s
}

// StartWithArgs starts a throwaway redis-server with extra arguments, e.g.
// "--maxmemory", "32mb", "--maxmemory-policy", "noeviction" (kept on
// Restart). It skips the test without a redis-server binary: neither
// REDIS_URL nor miniredis can take them.
func StartWithArgs(t testing.TB, args ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redistest: custom redis-server arguments need a redis-server binary")
	}
	s := &Server{t: t, Kind: KindProcess, dir: t.TempDir(), args: args}
	s.startProcess(bin, 0)
	t.Cleanup(s.Stop)
	return s
}

// StartCluster returns a one-node Redis Cluster owning every slot, so tests
// meet Cluster's rules (a script or transaction may only touch keys of one
// slot: CROSSSLOT otherwise). It skips the test without a redis-server binary.
func StartCluster(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redistest: a Redis Cluster needs a redis-server binary")
	}
	s := &Server{t: t, Kind: KindProcess, dir: t.TempDir(), cluster: true}
	s.startProcess(bin, 0)
	t.Cleanup(s.Stop)
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	ctx := context.Background()
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatalf("redistest: cluster slots: %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		info, _ := c.ClusterInfo(ctx).Result()
		if strings.Contains(info, "cluster_state:ok") {
			return s
		}
	}
	t.Fatal("redistest: the cluster did not become ready")
	return nil
}

// Sentinel is a Redis Sentinel watching a primary started by StartSentinel.
type Sentinel struct {
	Primary    *Server
	Addr       string
	MasterName string
}

// StartSentinel starts a primary and one sentinel monitoring it under the
// name "gateway". It skips the test without a redis-server binary.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redistest: Sentinel needs a redis-server binary")
	}
	primary := Start(t)
	dir := t.TempDir()
	port := freePort(t)
	conf := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor gateway 127.0.0.1 %d 1\n", port, dir, primary.port)
	path := dir + "/sentinel.conf"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, path, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatalf("redistest: start sentinel: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := redis.NewSentinelClient(&redis.Options{Addr: addr})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if a, err := c.GetMasterAddrByName(context.Background(), "gateway").Result(); err == nil && len(a) == 2 {
			return &Sentinel{Primary: primary, Addr: addr, MasterName: "gateway"}
		}
	}
	t.Fatal("redistest: the sentinel did not report the primary")
	return nil
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *Server) startProcess(bin string, port int) {
	t := s.t
	t.Helper()
	for try := 0; try < 5; try++ {
		p := port
		if p == 0 {
			p = freePort(t)
		}
		args := []string{"--port", strconv.Itoa(p), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", s.dir,
			"--protected-mode", "yes", "--loglevel", "warning"}
		// The settings production runs with (deployments set them too).
		args = append(args, redisconf.Args()...)
		if s.cluster {
			args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes-"+strconv.Itoa(p)+".conf")
		}
		args = append(args, s.args...)
		cmd := exec.Command(bin, args...)
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			t.Fatalf("redistest: start redis-server: %v", err)
		}
		go func() { // drain output so the child never blocks on a full pipe
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
			}
		}()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		if waitReady(addr, 5*time.Second) {
			s.mu.Lock()
			s.cmd, s.port, s.Addr, s.URL = cmd, p, addr, "redis://"+addr
			s.mu.Unlock()
			return
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	t.Fatalf("redistest: redis-server did not become ready")
}

func waitReady(addr string, within time.Duration) bool {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if c.Ping(context.Background()).Err() == nil {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// Client returns a go-redis client for the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// CanRestart reports whether Stop/Restart work (only for a redis-server the
// helper started itself).
func (s *Server) CanRestart() bool { return s.Kind == KindProcess }

// Stop kills the redis-server (data is lost: it keeps nothing on disk).
func (s *Server) Stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// Restart starts the redis-server again on the same port.
func (s *Server) Restart() {
	s.t.Helper()
	if !s.CanRestart() {
		s.t.Skip("redistest: restart needs a redis-server binary")
	}
	s.Stop()
	bin, _ := exec.LookPath("redis-server")
	s.startProcess(bin, s.port)
}

// FastForward advances miniredis' clock so TTLs expire; on a real server it
// is a no-op and the caller must wait for real time.
func (s *Server) FastForward(d time.Duration) {
	if s.mini != nil {
		s.mini.FastForward(d)
	}
}

// String describes the server for test logs.
func (s *Server) String() string { return fmt.Sprintf("%s at %s", s.Kind, s.Addr) }
