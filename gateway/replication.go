package gateway

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/admission"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/replication"
)

// Fence waits until the writes a process finished are on the Redis
// replicas (a *replication.Fence): an acknowledgement then survives a
// failover. Begin is called before a request's first write.
type Fence interface {
	Begin() replication.Epoch
	Wait(ctx context.Context, began replication.Epoch) error
}

// replicatedWrites answers a request that may change something (every
// method but GET and HEAD) with its 2xx (or, from the console, the 303 to
// the page that shows what was done) only once its writes are on enough
// replicas; otherwise with 503 /problems/not-replicated and Retry-After.
// The writes stay: a retry with the same Idempotency-Key finds the
// message they made, and never makes a second one.
func (s *Server) replicatedWrites(c *fiber.Ctx) error {
	if s.opts.Fence == nil || c.Method() == fiber.MethodGet || c.Method() == fiber.MethodHead {
		return c.Next()
	}
	began := s.opts.Fence.Begin()
	if err := c.Next(); err != nil {
		return err
	}
	if st := c.Response().StatusCode(); st < 200 || st > 399 || c.Locals(fencedKey) != nil {
		return nil
	}
	if err := s.opts.Fence.Wait(c.UserContext(), began); err != nil {
		c.Response().Reset() // the 2xx that was to be sent
		return s.unavailable(err)
	}
	return nil
}

// notReplicated answers a request whose writes the replicas did not
// acknowledge in time.
func notReplicated() *Problem {
	p := problem(http.StatusServiceUnavailable, "not-replicated", "the message store could not confirm that this request's writes reached its replicas (a failover may be under way); the request may or may not have taken effect: retry with the same Idempotency-Key, which never makes a second message")
	p.RetryAfter = DefaultRetryAfter
	return p
}

// isNotReplicated reports whether a storage error is a fence's.
func isNotReplicated(err error) bool { return errors.Is(err, replication.ErrNotReplicated) }

// webhookBegin starts a webhook's unit of writes.
func (s *Server) webhookBegin() replication.Epoch {
	if s.opts.Fence == nil {
		return 0
	}
	return s.opts.Fence.Begin()
}

// webhookReplicated answers a provider 503 with Retry-After when a
// webhook's writes are not on enough replicas, so that the provider tries
// again (its reports are applied once), and reports whether it answered.
// A step of a call in progress is answered anyway: the patient is on the
// line, and a call that fails is no better than an answer lost.
func (s *Server) webhookReplicated(ctx context.Context, c *fiber.Ctx, path string, began replication.Epoch) bool {
	if s.opts.Fence == nil {
		return false
	}
	err := s.opts.Fence.Wait(ctx, began)
	switch {
	case err == nil:
		return false
	case liveCall(path):
		s.log.Warn("a call's step is answered although its writes are not confirmed on the replicas", "err", err)
		return false
	case isNotReplicated(err):
		s.log.Warn("a provider webhook's writes are not confirmed on the replicas; the provider is asked to try again", "err", err)
	default:
		s.log.Error("storage unavailable", "err", err)
	}
	_ = webhookTryAgain(c, DefaultRetryAfter)
	return true
}

// fencedKey marks a request whose handler waited for the replicas itself.
type fencedLocal struct{}

var fencedKey = fencedLocal{}

// failoverPause is the time between two tries of a request waiting out a
// failover.
const failoverPause = 100 * time.Millisecond

// acceptThroughFailover accepts a message. With a fence and an
// Idempotency-Key, a failover is waited out for up to FailoverWait: a try
// whose writes are not confirmed on the replicas (a failover may have
// taken them back) or that found no primary is run again, and the key
// finds the message the lost try made, or makes it once. The client gets
// its 2xx later instead of a 503 for the seconds the sentinels take to
// promote a replica. Without a key a second try could make a second
// message, so the first answer stands.
func (s *Server) acceptThroughFailover(c *fiber.Ctx, tenant string, d *messaging.Draft, idem messaging.Idempotency) (messaging.Accepted, error) {
	ctx := c.UserContext()
	if s.opts.Fence == nil || s.opts.FailoverWait <= 0 || idem.Key == "" {
		return s.opts.Messages.AcceptRequest(ctx, tenant, d, idem)
	}
	until := s.opts.Now().Add(s.opts.FailoverWait)
	var made string // the id an earlier try made, kept or not
	var rate admission.RateState
	for tries := 1; ; tries++ {
		began := s.opts.Fence.Begin()
		accept := s.opts.Messages.AcceptRequest // the request meets its rate once
		if tries > 1 {
			accept = s.opts.Messages.Accept
		}
		a, err := accept(ctx, tenant, d, idem)
		if tries == 1 {
			rate = a.Rate
		}
		a.Rate = rate
		if err == nil {
			if !a.Replayed {
				made = a.ID
			} else if a.ID == made {
				a.Replayed = false // this request's own message, kept after all
			}
			err = s.opts.Fence.Wait(ctx, began)
		}
		if err == nil {
			c.Locals(fencedKey, true)
			if tries > 1 {
				s.log.Info("a message request waited out a failover", "tries", tries)
			}
			return a, nil
		}
		if !failingOver(err) || !s.opts.Now().Before(until) {
			return a, err
		}
		t := time.NewTimer(failoverPause)
		select {
		case <-ctx.Done():
			t.Stop()
			return a, err
		case <-t.C:
		}
	}
}

// failingOver reports whether an error is what a failover looks like from
// here: writes not confirmed on the replicas, or the store unreachable. A
// refusal, a bad request, a reused key or a full Redis is answered as it
// is.
func failingOver(err error) bool {
	var (
		p       *Problem
		invalid *messaging.InvalidError
	)
	switch {
	case isNotReplicated(err):
		return true
	case errors.As(err, &p), errors.As(err, &invalid), refusal(err) != err,
		admission.IsOutOfMemory(err), errors.Is(err, ledger.ErrIdempotencyMismatch),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	}
	return true
}
