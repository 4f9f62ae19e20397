package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/replication"
)

// fakeFence answers every wait with err and counts the waits.
type fakeFence struct {
	err   error
	waits int
}

func (f *fakeFence) Begin() replication.Epoch { return 3 }

func (f *fakeFence) Wait(_ context.Context, began replication.Epoch) error {
	if began != 3 {
		return errors.New("the request did not begin")
	}
	f.waits++
	return f.err
}

func TestA2xxWaitsForTheRequestsWritesToReachTheReplicas(t *testing.T) {
	notOnReplicas := &replication.NotReplicatedError{Want: 1, Acked: 0}
	cases := []struct {
		name, method string
		handler      int // the status the handler answers
		fence        error
		status       int
		problem      string
		waits        int
	}{
		{"a message accepted once its writes are on the replicas", "POST", 202, nil, 202, "", 1},
		{"a message whose writes the replicas did not acknowledge", "POST", 202, notOnReplicas, 503, "/problems/not-replicated", 1},
		{"a replayed message likewise", "POST", 200, notOnReplicas, 503, "/problems/not-replicated", 1},
		{"Redis unreachable at the fence", "PUT", 200, errors.New("dial tcp: connection refused"), 503, "/problems/unavailable", 1},
		{"a refusal wrote nothing to wait for", "POST", 422, notOnReplicas, 422, "", 0},
		{"a read waits for nothing", "GET", 200, notOnReplicas, 200, "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeFence{err: tc.fence}
			s := &Server{opts: Options{Fence: f}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			app := fiber.New(fiber.Config{ErrorHandler: errorHandler})
			app.Use(s.replicatedWrites)
			app.Add(tc.method, "/v1/messages", func(c *fiber.Ctx) error {
				c.Set("Idempotent-Replayed", "true")
				return c.Status(tc.handler).JSON(fiber.Map{"id": "01JD"})
			})
			resp, err := app.Test(httptest.NewRequest(tc.method, "/v1/messages", nil))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || f.waits != tc.waits {
				t.Fatalf("answered %d after %d waits: %s", resp.StatusCode, f.waits, body)
			}
			if tc.problem == "" {
				return
			}
			if !strings.Contains(string(body), `"type":"`+tc.problem+`"`) || strings.Contains(string(body), "01JD") ||
				resp.Header.Get("Retry-After") == "" || resp.Header.Get("Idempotent-Replayed") != "" {
				t.Fatalf("answer %v %s, want only %s with Retry-After", resp.Header, body, tc.problem)
			}
		})
	}
}

// failingFence answers its first waits with a failover's errors, calling
// lose before each (a demotion taking back the writes), then succeeds.
type failingFence struct {
	errs  []error
	lose  func()
	waits int
	clock *time.Time
}

func (f *failingFence) Begin() replication.Epoch { return 7 }

func (f *failingFence) Wait(context.Context, replication.Epoch) error {
	f.waits++
	*f.clock = f.clock.Add(300 * time.Millisecond) // a wait takes time
	if f.waits > len(f.errs) {
		return nil
	}
	if f.lose != nil {
		f.lose()
	}
	return f.errs[f.waits-1]
}

func TestAMessageRequestWaitsOutAFailoverAndMakesItsMessageOnce(t *testing.T) {
	notOnReplicas := &replication.NotReplicatedError{Want: 1, Acked: 0}
	failover := []error{notOnReplicas, errors.New("dial tcp 127.0.0.1:1: connection refused"), notOnReplicas}
	cases := []struct {
		name    string
		key     string
		errs    []error
		lost    bool // each failed wait loses the writes, as a demotion does
		wait    time.Duration
		status  int
		waits   int
		replays bool // the answer says Idempotent-Replayed
	}{
		{"writes taken back by the failover are made again on the new primary", "k-lost", failover, true, 2 * time.Second, 202, 4, false},
		{"writes the replicas had after all are found by the key, not made twice", "k-kept", failover, false, 2 * time.Second, 202, 4, false},
		{"without an Idempotency-Key a second try could send twice: 503 at once", "", failover, true, 2 * time.Second, 503, 1, false},
		{"a failover longer than the wait is answered 503", "k-long", slices.Repeat(failover, 4), true, 2 * time.Second, 503, 7, false},
		{"a wait of 0 answers 503 at once", "k-zero", failover, true, 0, 503, 1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rdb := redistest.Start(t).Client()
			l := ledger.New(rdb, 24*time.Hour)
			clock := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
			now := func() time.Time { return clock }
			q := asynq.NewClientFromRedisClient(rdb)
			f := &failingFence{errs: tc.errs, clock: &clock}
			if tc.lost {
				f.lose = func() { rdb.FlushAll(context.Background()) }
			}
			msgs := &messaging.Service{Ledger: l, Queue: q, Channels: channels.NewRegistry(namedChannel("sms")), Now: now}
			s := &Server{opts: Options{Messages: msgs, Ledger: l, Fence: f, FailoverWait: tc.wait, Now: now, IdempotencyTTL: time.Hour},
				log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			app := fiber.New(fiber.Config{ErrorHandler: errorHandler})
			app.Post("/v1/messages", s.replicatedWrites, func(c *fiber.Ctx) error {
				c.Locals(tenantKey, "clinic-a")
				return c.Next()
			}, s.createMessage)
			req := httptest.NewRequest("POST", "/v1/messages",
				strings.NewReader(`{"channel":"sms","to":{"phone":"+14155550100"},"body":"Day 7: how is the wound?"}`))
			req.Header.Set("Content-Type", "application/json")
			if tc.key != "" {
				req.Header.Set("Idempotency-Key", tc.key)
			}
			resp, err := app.Test(req, 10_000)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || f.waits != tc.waits || (resp.Header.Get("Idempotent-Replayed") != "") != tc.replays {
				t.Fatalf("answered %d %v after %d waits, want %d after %d: %s", resp.StatusCode, resp.Header, f.waits, tc.status, tc.waits, body)
			}
			if tc.status != 202 {
				if !strings.Contains(string(body), "/problems/not-replicated") && !strings.Contains(string(body), "/problems/unavailable") {
					t.Fatalf("answer %s, want a failover's 503", body)
				}
				return
			}
			var a struct{ ID string }
			if err := json.Unmarshal(body, &a); err != nil {
				t.Fatal(err)
			}
			// One message: the record, the key's replay, and one queued send.
			if m, err := l.Get(t.Context(), "clinic-a", a.ID); err != nil || m == nil {
				t.Fatalf("the answered message %s: %v", a.ID, err)
			}
			again := httptest.NewRequest("POST", "/v1/messages",
				strings.NewReader(`{"channel":"sms","to":{"phone":"+14155550100"},"body":"Day 7: how is the wound?"}`))
			again.Header.Set("Content-Type", "application/json")
			again.Header.Set("Idempotency-Key", tc.key)
			resp, err = app.Test(again, 10_000)
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !strings.Contains(string(body), a.ID) {
				t.Fatalf("the client's retry answered %d %s, want 200 with %s", resp.StatusCode, body, a.ID)
			}
			// Every queued task, whatever its queue (a flush also empties
			// asynq's list of queue names).
			tasks, err := rdb.Keys(t.Context(), "asynq:{*}:t:*").Result()
			if err != nil {
				t.Fatal(err)
			}
			queued := len(tasks)
			if queued != 1 {
				t.Fatalf("%d sends queued, want 1", queued)
			}
		})
	}
}
