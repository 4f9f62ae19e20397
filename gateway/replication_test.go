package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"

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
