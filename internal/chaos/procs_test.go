package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildGateway builds the production binary (no dev tag) from the module
// root into dir and returns its path.
func buildGateway(t *testing.T, dir string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "gateway")
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/gateway")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/gateway: %v\n%s", err, out)
	}
	t.Logf("built the gateway binary in %s", time.Since(start).Round(100*time.Millisecond))
	return bin
}

// moduleRoot is the nearest directory above the working directory that
// holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// freeAddr is a free 127.0.0.1 port, as host:port.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is one gateway process (serve or worker) started from the binary.
type proc struct {
	name string // serve, worker-1, worker-2 (a restarted worker keeps its name)
	role string
	// health is where it answers /readyz: the API address for serve, the
	// health listener for a worker.
	health  string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}

	mu       sync.Mutex
	killed   bool // by the test, with SIGKILL
	stopping bool // by the test, with SIGTERM
	exitErr  error
	exitAt   time.Time
}

// startProc starts the binary in a role with the environment env (and
// nothing of the test's own environment but PATH), logging to a file of
// dir, and waits until it answers /readyz.
func startProc(t *testing.T, bin, dir, name, role string, env []string, health string) *proc {
	t.Helper()
	p := &proc{name: name, role: role, health: health, done: make(chan struct{})}
	p.logPath = filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, time.Now().UnixNano()))
	f, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, role)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.Dir = dir
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		err := p.cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.exitErr, p.exitAt = err, time.Now()
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	if err := p.waitReady(15 * time.Second); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, p.logTail(20))
	}
	return p
}

// waitReady polls /readyz until it answers 200.
func (p *proc) waitReady(within time.Duration) error {
	c := &http.Client{Timeout: time.Second, Transport: loopbackOnly}
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("exited before it was ready: %v", p.exitErr)
		default:
		}
		resp, err := c.Get("http://" + p.health + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready within %s", within)
}

// kill sends SIGKILL and waits for the process to go.
func (p *proc) kill() {
	p.mu.Lock()
	if p.exitAt.IsZero() {
		p.killed = true
	}
	p.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits up to within for a clean exit.
func (p *proc) stop(within time.Duration) error {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(within):
		p.kill()
		return fmt.Errorf("%s did not stop within %s of SIGTERM", p.name, within)
	}
	if err := p.exitError(); err != nil {
		return fmt.Errorf("%s stopped with %v", p.name, err)
	}
	return nil
}

// crashed says whether the process ended without the test ending it.
func (p *proc) crashed() (bool, error) {
	select {
	case <-p.done:
	default:
		return false, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.killed && !p.stopping, p.exitErr
}

func (p *proc) exitError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// logTail is the last n lines of the process's log. The gateway logs ids
// and redacted addresses only; the run checks that.
func (p *proc) logTail(n int) string {
	lines := p.logLines()
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (p *proc) logLines() []string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// waitUntil polls ok every step until it holds or ctx ends.
func waitUntil(ctx context.Context, step time.Duration, ok func() bool) bool {
	for {
		if ok() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(step):
		}
	}
}
