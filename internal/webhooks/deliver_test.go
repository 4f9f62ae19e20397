package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/internal/egress"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/replication"
)

// receiver is a loopback endpoint that counts the connections it is offered.
type receiver struct {
	srv   *httptest.Server
	conns atomic.Int64
}

func newReceiver(t *testing.T, h http.Handler) *receiver {
	t.Helper()
	r := &receiver{srv: httptest.NewUnstartedServer(h)}
	r.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			r.conns.Add(1)
		}
	}
	r.srv.Start()
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) seen() int64 {
	time.Sleep(50 * time.Millisecond)
	return r.conns.Load()
}

var answer = func(code int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) })
}

// TestDeliveriesGoOnlyWhereThePolicyAllows posts one event per case and
// reads its dead letter: the first failure of a task run outside Asynq
// is its last.
func TestDeliveriesGoOnlyWhereThePolicyAllows(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client()
	store := NewStore(rdb)
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

	cases := []struct {
		name     string
		allow    []netip.Prefix
		endpoint http.Handler // the tenant's URL answers this
		callback bool         // post to a callback_url instead of the endpoint
		redirect bool         // the endpoint redirects to a second receiver
		// want is the dead letter's last_error ("" when delivered).
		want string
	}{
		{name: "an allowed endpoint gets the event", allow: loopback, endpoint: answer(204)},
		{name: "a loopback endpoint is refused", endpoint: answer(204), want: "refused: private address (loopback)"},
		{name: "a loopback callback_url is refused", endpoint: answer(204), callback: true, want: "refused: private address (loopback)"},
		{name: "an inner service's answer is not told", endpoint: answer(404), want: "refused: private address (loopback)"},
		{name: "another network allowed does not open loopback", allow: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")}, endpoint: answer(204), want: "refused: private address (loopback)"},
		{name: "a redirect is a failed delivery and is not followed", allow: loopback, redirect: true, want: "endpoint answered 307; redirects are not followed"},
		{name: "an allowed endpoint's failure is told", allow: loopback, endpoint: answer(503), want: "endpoint answered 503"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tenant := "clinic-" + strconv.Itoa(i)
			inner := newReceiver(t, answer(204))
			h := c.endpoint
			if c.redirect {
				h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, inner.srv.URL+"/admin", http.StatusTemporaryRedirect)
				})
			}
			ep := newReceiver(t, h)
			target := ep.srv.URL + "/hooks?token=s3cret-query"
			var logs bytes.Buffer
			d := &Deliverer{Store: store, Client: egress.Policy{Allow: c.allow}.Client(5 * time.Second),
				Log: slog.New(slog.NewTextHandler(&logs, nil))}
			p := payload{Tenant: tenant, Event: Event{ID: "evt-" + strconv.Itoa(i), Type: MessageStatus, CreatedAt: time.Now().UTC(), Data: json.RawMessage(`{}`)}}
			registered := target
			if c.callback {
				registered = "https://ehr.example-clinic.test/hooks"
				p.URL = target
			}
			if _, err := store.Put(context.Background(), tenant, registered, false); err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(p)
			err := d.ProcessTask(context.Background(), asynq.NewTask(TypeDeliver, b))

			dead, derr := store.Dead(context.Background(), tenant, 10)
			if derr != nil {
				t.Fatal(derr)
			}
			if c.want == "" {
				if err != nil || len(dead) != 0 || ep.seen() != 1 {
					t.Fatalf("delivery: err %v, dead %v, endpoint saw %d connections", err, dead, ep.seen())
				}
				return
			}
			if err == nil || err.Error() != c.want {
				t.Fatalf("ProcessTask = %v, want %q", err, c.want)
			}
			if len(dead) != 1 || dead[0].LastError != c.want {
				t.Fatalf("dead letters %+v, want one saying %q", dead, c.want)
			}
			if strings.HasPrefix(c.want, "refused") {
				if n := ep.seen(); n != 0 {
					t.Fatalf("the refused endpoint saw %d connections", n)
				}
				if !errors.Is(err, egress.ErrRefused) {
					t.Fatalf("the error does not match egress.ErrRefused: %v", err)
				}
			}
			if n := inner.seen(); n != 0 {
				t.Fatalf("the redirect target saw %d connections", n)
			}
			if strings.Contains(logs.String(), "s3cret-query") || strings.Contains(dead[0].LastError, "127.0.0.1") {
				t.Fatalf("the URL's query or the address leaked: log %q, dead letter %q", logs.String(), dead[0].LastError)
			}
		})
	}
}

// TestAnEventWaitsUntilItsCauseIsOnTheReplicas freezes the only replica:
// the clinic must not hear of a reply or a status a failover could take
// back. Once the replica is back, the retried event goes out.
func TestAnEventWaitsUntilItsCauseIsOnTheReplicas(t *testing.T) {
	primary := redistest.StartWithArgs(t)
	replica := redistest.StartReplica(t, primary)
	rdb := primary.Client()
	store := NewStore(rdb)
	ep := newReceiver(t, answer(204))
	if _, err := store.Put(context.Background(), "clinic-a", ep.srv.URL+"/hooks", false); err != nil {
		t.Fatal(err)
	}
	d := &Deliverer{Store: store, Client: egress.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}.Client(5 * time.Second),
		Log: slog.New(slog.DiscardHandler), Fence: replication.New(rdb, replication.Options{Replicas: 1, Timeout: 300 * time.Millisecond})}
	b, _ := json.Marshal(payload{Tenant: "clinic-a", Event: Event{ID: "evt-1", Type: MessageReply, CreatedAt: time.Now().UTC(), Data: json.RawMessage(`{}`)}})
	task := asynq.NewTask(TypeDeliver, b)

	if err := syscall.Kill(replica.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = syscall.Kill(replica.Pid(), syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	err := d.ProcessTask(context.Background(), task)
	if !errors.Is(err, replication.ErrNotReplicated) || !strings.HasPrefix(err.Error(), "held:") {
		t.Fatalf("with the replica frozen, ProcessTask = %v", err)
	}
	if n := ep.seen(); n != 0 {
		t.Fatalf("the endpoint was called %d times while the event's cause was not replicated", n)
	}
	thaw()
	// The thawed replica catches up within moments, longer than one
	// fence timeout on a loaded machine: a held event is retried, as
	// Asynq retries it.
	err = d.ProcessTask(context.Background(), task)
	for deadline := time.Now().Add(10 * time.Second); errors.Is(err, replication.ErrNotReplicated) && time.Now().Before(deadline); {
		if n := ep.seen(); n != 0 {
			t.Fatalf("the endpoint was called %d times while the event's cause was not replicated", n)
		}
		time.Sleep(50 * time.Millisecond)
		err = d.ProcessTask(context.Background(), task)
	}
	if err != nil {
		t.Fatalf("with the replica back, ProcessTask = %v", err)
	}
	if n := ep.seen(); n != 1 {
		t.Fatalf("the endpoint saw %d connections, want 1", n)
	}
}
