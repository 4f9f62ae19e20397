package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/patientmsg/gateway/internal/broadcasts"
)

// rosterJSON is GET /v1/broadcasts/{id}: where every person stands.
type rosterJSON struct {
	ID         string    `json:"id"`
	Name       string    `json:"name,omitempty"`
	State      string    `json:"state"`
	Priority   string    `json:"priority"`
	Channels   []string  `json:"channels"`
	CreatedAt  time.Time `json:"created_at"`
	Recipients int       `json:"recipients"`
	FannedOut  int       `json:"fanned_out"` // people made so far
	// FanOutDone says every chunk of the audience has been fanned out.
	FanOutDone bool                        `json:"fan_out_done"`
	People     map[string]int64            `json:"people"`     // by state
	ByChannel  map[string]map[string]int64 `json:"by_channel"` // messages by status, per channel
	Poll       map[string]int64            `json:"poll"`       // tallies by meaning, no_answer_yet, unreachable
	// IncidentID is the incident the broadcast is an update of.
	IncidentID string `json:"incident_id,omitempty"`
}

func rosterOf(sum *broadcasts.Summary) rosterJSON {
	r := sum.Roster()
	return rosterJSON{ID: sum.ID, Name: sum.Name, State: sum.State, Priority: sum.Priority, Channels: sum.Channels,
		CreatedAt: sum.CreatedAt, Recipients: sum.Total, FannedOut: r.FannedOut, FanOutDone: r.FanOutDone, People: r.People,
		ByChannel: r.ByChannel, Poll: r.Poll, IncidentID: sum.IncidentID}
}

func (s *Server) broadcastOf(c *fiber.Ctx) (*broadcasts.Summary, error) {
	sum, err := s.opts.Broadcasts.Get(c.UserContext(), tenantOf(c), c.Params("id"))
	if errors.Is(err, broadcasts.ErrNotFound) {
		return nil, problem(404, "not-found", "no broadcast with this id for your API key")
	} else if err != nil {
		return nil, s.unavailable(err)
	}
	return sum, nil
}

// GET /v1/broadcasts?limit=20: the tenant's broadcasts, newest first,
// each with its roster.
func (s *Server) listBroadcasts(c *fiber.Ctx) error {
	limit, err := queryLimit(c, 20, 100)
	if err != nil {
		return err
	}
	list, err := s.opts.Broadcasts.Recent(c.UserContext(), tenantOf(c), limit)
	if err != nil {
		return s.unavailable(err)
	}
	out := make([]rosterJSON, len(list))
	for i, sum := range list {
		out[i] = rosterOf(sum)
	}
	return c.JSON(fiber.Map{"broadcasts": out})
}

// GET /v1/broadcasts/{id}
func (s *Server) getBroadcast(c *fiber.Ctx) error {
	sum, err := s.broadcastOf(c)
	if err != nil {
		return err
	}
	return c.JSON(rosterOf(sum))
}

// GET /v1/broadcasts/{id}/recipients?state=need_help&after=<index>&limit=100
func (s *Server) broadcastRecipients(c *fiber.Ctx) error {
	sum, err := s.broadcastOf(c)
	if err != nil {
		return err
	}
	state := c.Query("state")
	set, ok := sum.ListSet(state)
	if !ok {
		return problem(400, "bad-query", "state must be a person state (pending, queued, sent, delivered, acknowledged, unreachable, suppressed, canceled) or a poll answer's meaning (e.g. need_help)")
	}
	after := -1
	if v := c.Query("after"); v != "" {
		if after, err = strconv.Atoi(v); err != nil || after < 0 {
			return problem(400, "bad-query", "after must be a person's index")
		}
	}
	limit, err := queryLimit(c, 100, 1000)
	if err != nil {
		return err
	}
	people, err := s.opts.Broadcasts.List(c.UserContext(), sum.ID, set, after, limit)
	if err != nil {
		return s.unavailable(err)
	}
	next := ""
	if len(people) == limit {
		next = strconv.Itoa(people[len(people)-1].Index)
	}
	// Addresses are shown whole: the list is there to call people.
	return c.JSON(fiber.Map{"recipients": people, "next_after": next})
}

// POST /v1/broadcasts/{id}/cancel: nothing more is sent; messages not yet
// handed to a provider are canceled.
func (s *Server) cancelBroadcast(c *fiber.Ctx) error {
	sum, err := s.broadcastOf(c)
	if err != nil {
		return err
	}
	err = s.opts.Broadcast.Cancel(c.UserContext(), sum.ID)
	if errors.Is(err, broadcasts.ErrAlreadyCanceled) {
		return problem(409, "not-cancelable", "the broadcast was already canceled")
	}
	if err != nil {
		return s.unavailable(err)
	}
	sum.State = broadcasts.StateCanceled
	return c.JSON(rosterOf(sum))
}

// POST /v1/broadcasts/{id}/repair: the roster brought back in line with
// the messages; answers what was fixed.
func (s *Server) repairBroadcast(c *fiber.Ctx) error {
	sum, err := s.broadcastOf(c)
	if err != nil {
		return err
	}
	r, err := s.opts.Broadcast.Repair(c.UserContext(), sum.ID)
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(r)
}

// eventStreamFor is how long one connection of the event stream lasts.
const eventStreamFor = 10 * time.Second

// GET /v1/broadcasts/{id}/events: progress as Server-Sent Events, one
// "person" event per change (state, answer, the try's channel and status),
// then the roster every few seconds. Last-Event-ID resumes.
func (s *Server) broadcastEvents(c *fiber.Ctx) error {
	sum, err := s.broadcastOf(c)
	if err != nil {
		return err
	}
	after := c.Get("Last-Event-ID", "0")
	if after == "" {
		after = "0"
	}
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Accel-Buffering", "no")
	id, tenant, store := sum.ID, tenantOf(c), s.opts.Broadcasts
	c.Context().SetBodyStreamWriter(fasthttp.StreamWriter(func(w *bufio.Writer) {
		// A response may take at most the server's write timeout (15 s):
		// each connection streams for eventStreamFor, and EventSource
		// clients reconnect after `retry` with Last-Event-ID, losing nothing.
		ctx, cancel := context.WithTimeout(context.Background(), eventStreamFor)
		defer cancel()
		fmt.Fprintf(w, "retry: 1000\n\n")
		lastRoster := time.Time{}
		for ctx.Err() == nil {
			evs, err := store.Events(ctx, id, after, 2*time.Second)
			if err != nil {
				return
			}
			for _, ev := range evs {
				kind, _ := ev.Values["t"].(string) // "chunk": people fanned out
				if kind == "" {
					kind = "person"
				}
				fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", ev.ID, kind, ev.Values["e"])
				after = ev.ID
			}
			if time.Since(lastRoster) > 2*time.Second {
				sum, err := store.Get(ctx, tenant, id)
				if err != nil {
					return
				}
				b, _ := json.Marshal(rosterOf(sum))
				fmt.Fprintf(w, "event: roster\ndata: %s\n\n", b)
				lastRoster = time.Now()
			}
			if err := w.Flush(); err != nil {
				return // the client went away
			}
		}
	}))
	return nil
}

// GET /v1/broadcasts/{id}/report.csv: the record, one row per person: the
// channels tried with their times and outcomes, the final state and answer.
func (s *Server) broadcastReport(c *fiber.Ctx) error {
	sum, err := s.broadcastOf(c)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, "text/csv; charset=utf-8")
	c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+sum.ID+`-report.csv"`)
	var b bytes.Buffer
	if err := s.opts.Broadcasts.WriteReport(c.UserContext(), sum.ID, &b); err != nil {
		return s.unavailable(err)
	}
	return c.Send(b.Bytes())
}

// POST /v1/broadcasts/preview: the same body as POST /v1/broadcasts;
// nothing is stored or sent. Per channel: who gets it first, SMS segments
// and encoding by locale, the time to send at each sender's current rate
// and daily quota, and the estimated cost.
func (s *Server) previewBroadcast(c *fiber.Ctx) error {
	var in broadcasts.Request
	if p := decodeJSON(c, &in); p != nil {
		return p
	}
	ctx := c.UserContext()
	est, err := s.opts.Broadcast.Preview(ctx, tenantOf(c), &in)
	if err != nil {
		return s.domainProblem(err)
	}
	// How much room Redis has left, for the people this broadcast queues.
	return c.JSON(struct {
		broadcasts.Estimate
		RedisMemory *memoryJSON `json:"redis_memory,omitempty"`
	}{est, s.redisMemory(ctx)})
}

// POST /v1/broadcasts: validates, stores the broadcast and queues its
// fan-out in chunks; answers 202 at once, whatever the audience's size.
func (s *Server) createBroadcast(c *fiber.Ctx) error {
	var in broadcasts.Request
	if p := decodeJSON(c, &in); p != nil {
		return p
	}
	cfg, err := s.opts.Broadcast.Create(c.UserContext(), tenantOf(c), &in)
	if err != nil {
		return s.domainProblem(err)
	}
	return c.Status(fiber.StatusAccepted).JSON(fiber.Map{"id": cfg.ID, "state": broadcasts.StateActive, "recipients": cfg.Total,
		"channels": cfg.Channels, "priority": cfg.Priority})
}
