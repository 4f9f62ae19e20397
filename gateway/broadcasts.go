package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/hibiken/asynq"
	"golang.org/x/sync/errgroup"

	"github.com/patientmsg/gateway/internal/audiences"
	"github.com/patientmsg/gateway/internal/broadcasts"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/templates"
	"github.com/patientmsg/gateway/workers"
)

// Task types of broadcasts (run by the workers).
const (
	TypeBroadcastFanout = "broadcast:fanout" // one chunk of the audience
	TypeBroadcastSweep  = "broadcast:sweep"  // people whose try timed out, every second
	TypeBroadcastCancel = "broadcast:cancel" // stop what has not been sent
)

// Broadcast limits.
const (
	MaxInlineAudience  = 10000
	DefaultAckTimeout  = 10 * time.Minute
	MaxBroadcastOption = 9
)

// BroadcastRequest is the body of POST /v1/broadcasts.
type BroadcastRequest struct {
	Name        string                `json:"name"`
	Audience    []audiences.Recipient `json:"audience"`
	AudienceID  string                `json:"audience_csv_upload_id"`
	Channels    []string              `json:"channels"`
	Template    *string               `json:"template"`
	Vars        map[string]string     `json:"vars"`
	Body        map[string]string     `json:"body"`
	Poll        *broadcasts.Poll      `json:"poll"`
	AckTimeout  string                `json:"ack_timeout"`
	Priority    string                `json:"priority"`
	SendAt      *string               `json:"send_at"`
	FollowUpOf  string                `json:"follow_up_of"`
	OnlyNotSafe bool                  `json:"only_not_safe"`
}

// POST /v1/broadcasts: validates, stores the broadcast and queues its
// fan-out in chunks; answers 202 at once, whatever the audience's size.
func (s *Server) createBroadcast(c *fiber.Ctx) error {
	var in BroadcastRequest
	if p := decodeJSON(c, &in); p != nil {
		return p
	}
	ctx, tenant, now := c.UserContext(), tenantOf(c), s.opts.Now().UTC()
	cfg, audience, p := s.validateBroadcast(c.UserContext(), tenant, &in, now)
	if p != nil {
		return p
	}
	if audience != nil {
		a, err := s.opts.Audiences.Save(ctx, tenant, audience)
		if err != nil {
			return s.unavailable(err)
		}
		cfg.AudienceID, cfg.Total, cfg.Chunks = a.ID, a.Count, a.Chunks
	}
	if err := s.opts.Broadcasts.Create(ctx, cfg); err != nil {
		return s.unavailable(err)
	}
	// The chunks' tasks are queued together: workers start on the first
	// while the rest are queued, and must not slow the answer down.
	g, gctx := errgroup.WithContext(ctx)
	for i := range cfg.Chunks {
		// The fan-out runs in the main pool, so the crisis pool is free to
		// send the messages it makes as soon as they are queued.
		g.Go(func() error {
			return s.enqueueTaskOn(gctx, s.opts.Bulk.Queue, TypeBroadcastFanout, fanoutPayload{Broadcast: cfg.ID, Chunk: i},
				asynq.TaskID(fmt.Sprintf("%s:fanout:%d", cfg.ID, i)), asynq.Queue(workers.QueueFor(workers.PriorityHigh)), asynq.MaxRetry(50))
		})
	}
	if err := g.Wait(); err != nil {
		return s.unavailable(err)
	}
	if err := s.scheduleSweep(ctx, cfg.ID, s.opts.Now().Add(time.Second)); err != nil {
		return s.unavailable(err)
	}
	s.log.Info("broadcast created", "tenant", tenant, "broadcast_id", cfg.ID, "recipients", cfg.Total, "chunks", cfg.Chunks)
	return c.Status(fiber.StatusAccepted).JSON(fiber.Map{"id": cfg.ID, "state": broadcasts.StateActive, "recipients": cfg.Total,
		"channels": cfg.Channels, "priority": cfg.Priority})
}

func (s *Server) enqueueTask(ctx context.Context, typ string, payload any, opts ...asynq.Option) error {
	return s.enqueueTaskOn(ctx, s.opts.Queue, typ, payload, opts...)
}

func (s *Server) enqueueTaskOn(ctx context.Context, q Enqueuer, typ string, payload any, opts ...asynq.Option) error {
	b, _ := json.Marshal(payload)
	_, err := q.EnqueueContext(ctx, asynq.NewTask(typ, b, opts...))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}

// validateBroadcast checks a request and returns the broadcast to create,
// and the inline audience to store (nil when the audience is an upload or
// the audience of an earlier broadcast).
func (s *Server) validateBroadcast(ctx context.Context, tenant string, in *BroadcastRequest, now time.Time) (*broadcasts.Config, *audiences.ParseResult, *Problem) {
	var errs []FieldError
	bad := func(field, format string, a ...any) {
		errs = append(errs, FieldError{Field: field, Detail: fmt.Sprintf(format, a...)})
	}
	cfg := &broadcasts.Config{ID: broadcasts.NewID(), Tenant: tenant, Name: strings.TrimSpace(in.Name), Vars: in.Vars,
		Body: in.Body, Poll: in.Poll, Priority: in.Priority, CreatedAt: now, FollowUpOf: in.FollowUpOf}
	if len(cfg.Name) > 200 {
		bad("name", "is longer than 200 characters")
	}
	configured := s.opts.Channels.Names()
	if len(in.Channels) == 0 || len(in.Channels) > 4 {
		bad("channels", "must list 1 to 4 channels, tried in order until the person acknowledges, e.g. [\"wechat\", \"sms\", \"voice\"]")
	}
	for i, ch := range in.Channels {
		switch {
		case !slices.Contains(configured, ch):
			bad(fmt.Sprintf("channels[%d]", i), "%q is not a configured channel; configured: %s", clip(ch), strings.Join(configured, ", "))
		case slices.Contains(cfg.Channels, ch):
			bad(fmt.Sprintf("channels[%d]", i), "%q is listed twice", ch)
		default:
			cfg.Channels = append(cfg.Channels, ch)
		}
	}
	switch cfg.Priority {
	case "":
		cfg.Priority = workers.PriorityCrisis
	case workers.PriorityCrisis, workers.PriorityHigh:
	default:
		bad("priority", "must be crisis (the default) or high")
	}
	cfg.AckTimeout = DefaultAckTimeout
	if in.AckTimeout != "" {
		least := s.opts.MinAckTimeout
		if least <= 0 {
			least = time.Minute
		}
		d, err := time.ParseDuration(in.AckTimeout)
		if err != nil || d < least || d > 24*time.Hour {
			bad("ack_timeout", "must be a duration from %s to 24h, e.g. 10m", least)
		} else {
			cfg.AckTimeout = d
		}
	}
	if in.SendAt != nil {
		t, err := time.Parse(time.RFC3339, *in.SendAt)
		switch {
		case err != nil:
			bad("send_at", "is not an RFC 3339 time such as 2026-11-23T10:00:00+08:00")
		case t.After(now.Add(MaxScheduleAhead)):
			bad("send_at", "is too far ahead")
		case t.After(now):
			u := t.UTC()
			cfg.SendAt = &u
		}
	}
	if p := in.Poll; p != nil {
		if len(p.Options) == 0 || len(p.Options) > MaxBroadcastOption {
			bad("poll.options", "must map 1 to 9 answers to their meaning, e.g. {\"1\": \"safe\", \"2\": \"need_help\"}")
		}
		for k, v := range p.Options {
			if k == "" || len(k) > 8 || strings.ContainsAny(k, " \t\n") || v == "" || len(v) > 32 || strings.ContainsAny(v, " :\t\n") {
				bad("poll.options", "answers are 1-8 characters, meanings 1-32 characters without spaces (e.g. need_help)")
				break
			}
		}
		for loc, text := range p.Question {
			if _, ok := normaliseLocale(loc); !ok && loc != "" {
				bad("poll.question", "%q is not a locale such as en or zh-CN", clip(loc))
			} else if strings.TrimSpace(text) == "" || utf8.RuneCountInString(text) > MaxPollQuestion {
				bad("poll.question", "each question is 1 to %d characters", MaxPollQuestion)
			}
		}
	}
	switch {
	case in.Template != nil && in.Body != nil:
		bad("template", "give either a template or body, not both")
	case in.Template != nil:
		cfg.Template = strings.TrimSpace(*in.Template)
		s.checkBroadcastTemplate(ctx, tenant, cfg, bad)
	case len(in.Body) > 0:
		for loc, text := range in.Body {
			if _, ok := normaliseLocale(loc); !ok && loc != "" {
				bad("body", "%q is not a locale such as en or zh-CN", clip(loc))
			}
			if strings.TrimSpace(text) == "" || len([]rune(text)) > 1600 {
				bad("body."+clip(loc), "must be 1 to 1,600 characters")
			}
		}
	default:
		bad("template", "give a template (e.g. crisis_safety_check) or body ({\"en\": \"…\", \"zh-CN\": \"…\"})")
	}
	var inline *audiences.ParseResult
	sources := 0
	for _, given := range []bool{len(in.Audience) > 0, in.AudienceID != "", in.FollowUpOf != ""} {
		if given {
			sources++
		}
	}
	switch {
	case sources != 1:
		bad("audience", "give exactly one of audience (a list of recipients), audience_csv_upload_id (POST /v1/audiences) or follow_up_of (an earlier broadcast's id)")
	case len(in.Audience) > MaxInlineAudience:
		bad("audience", "lists %d recipients; upload lists over %d as a CSV (POST /v1/audiences)", len(in.Audience), MaxInlineAudience)
	case len(in.Audience) > 0:
		inline = &audiences.ParseResult{}
		seen := map[string]int{}
		for i, r := range in.Audience {
			if err := audiences.ValidateRecipient(&r, s.opts.DefaultRegion); err != nil {
				bad(fmt.Sprintf("audience[%d]", i), "%v", err)
				continue
			}
			dup := false
			for _, id := range r.Identities() {
				if j, ok := seen[id.String()]; ok {
					bad(fmt.Sprintf("audience[%d]", i), "has the same %s as audience[%d]", id.Kind, j)
					dup = true
				}
				seen[id.String()] = i
			}
			if !dup {
				inline.Recipients = append(inline.Recipients, r)
			}
		}
		inline.Rows = len(inline.Recipients)
	case in.AudienceID != "":
		a, err := s.opts.Audiences.Get(ctx, tenant, in.AudienceID)
		if errors.Is(err, audiences.ErrNotFound) {
			bad("audience_csv_upload_id", "is not an audience of this tenant (uploads are kept 7 days)")
		} else if err != nil {
			return nil, nil, s.unavailable(err).(*Problem)
		} else {
			cfg.AudienceID, cfg.Total, cfg.Chunks = a.ID, a.Count, a.Chunks
		}
	case in.FollowUpOf != "":
		orig, err := s.opts.Broadcasts.Get(ctx, tenant, in.FollowUpOf)
		if errors.Is(err, broadcasts.ErrNotFound) {
			bad("follow_up_of", "is not a broadcast of this tenant")
		} else if err != nil {
			return nil, nil, s.unavailable(err).(*Problem)
		} else {
			cfg.AudienceID, cfg.Total, cfg.Chunks = orig.AudienceID, orig.Total, orig.Chunks
			cfg.OnlyNotSafe = in.OnlyNotSafe
			if in.OnlyNotSafe {
				// Those safe now are left out (the fan-out checks again).
				safe, err := s.opts.Broadcasts.Count(ctx, orig.ID, "ans:safe")
				if err != nil {
					return nil, nil, s.unavailable(err).(*Problem)
				}
				cfg.Total = max(cfg.Total-int(safe), 0)
			}
		}
	}
	if in.OnlyNotSafe && in.FollowUpOf == "" {
		bad("only_not_safe", "only applies with follow_up_of")
	}
	if len(errs) > 0 {
		return nil, nil, validationProblem(errs)
	}
	return cfg, inline, nil
}

// checkBroadcastTemplate renders the template on every channel with the
// given variables, so a mistake is a 422 now rather than a failed fan-out.
func (s *Server) checkBroadcastTemplate(ctx context.Context, tenant string, cfg *broadcasts.Config, bad func(string, string, ...any)) {
	if s.opts.Templates == nil {
		bad("template", "templates are not available on this gateway")
		return
	}
	t, err := s.opts.Templates.Get(ctx, tenant, cfg.Template)
	if errors.Is(err, templates.ErrNotFound) {
		bad("template", "%q is not a template of this tenant or a built-in one; GET /v1/templates lists them", clip(cfg.Template))
		return
	} else if err != nil {
		bad("template", "could not be read: try again")
		return
	}
	set, _ := s.settingsOf(ctx, tenant)
	for _, ch := range cfg.Channels {
		if _, err := t.Render(s.opts.TemplateChain, ch, "", cfg.Vars, set.AllowPHI); err != nil {
			for _, fe := range templateProblem(cfg.Template, ch, err).Errors {
				bad(fe.Field, "%s (channel %s)", fe.Detail, ch)
			}
		}
	}
}

type fanoutPayload struct {
	Broadcast string `json:"bc"`
	Chunk     int    `json:"chunk"`
}

// configs caches broadcasts' configurations (they never change).
var configs sync.Map

func (s *Server) broadcastConfig(ctx context.Context, id string) (*broadcasts.Config, error) {
	if c, ok := configs.Load(id); ok {
		return c.(*broadcasts.Config), nil
	}
	sum, err := s.opts.Broadcasts.Get(ctx, "", id)
	if err != nil {
		return nil, err
	}
	configs.Store(id, &sum.Config)
	return &sum.Config, nil
}

// BroadcastHandler runs a broadcast's worker tasks.
func (s *Server) BroadcastHandler() asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		switch t.Type() {
		case TypeBroadcastFanout:
			var p fanoutPayload
			if json.Unmarshal(t.Payload(), &p) != nil {
				return fmt.Errorf("bad payload: %w", asynq.SkipRetry)
			}
			return s.fanout(ctx, p)
		case TypeBroadcastSweep:
			var p fanoutPayload
			if json.Unmarshal(t.Payload(), &p) != nil {
				return fmt.Errorf("bad payload: %w", asynq.SkipRetry)
			}
			return s.sweep(ctx, p.Broadcast)
		case TypeBroadcastCancel:
			var p fanoutPayload
			if json.Unmarshal(t.Payload(), &p) != nil {
				return fmt.Errorf("bad payload: %w", asynq.SkipRetry)
			}
			return s.cancelPeople(ctx, p.Broadcast)
		}
		return fmt.Errorf("unknown task %s: %w", t.Type(), asynq.SkipRetry)
	})
}

// fanout makes the people of one chunk of the audience and sends each the
// first channel they have. It is safe to run again (after a worker
// restart): people already made are not made twice, and a message already
// queued is not queued again.
func (s *Server) fanout(ctx context.Context, p fanoutPayload) error {
	sum, err := s.opts.Broadcasts.Get(ctx, "", p.Broadcast)
	if errors.Is(err, broadcasts.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	if sum.State != broadcasts.StateActive {
		return nil
	}
	cfg := &sum.Config
	// The sweep that times people out runs while anyone waits; should its
	// chain have broken (a lost task), the fan-out starts it again.
	if err := s.scheduleSweep(ctx, cfg.ID, s.opts.Now().Add(time.Second)); err != nil {
		return err
	}
	recips, err := s.opts.Audiences.Chunk(ctx, cfg.Tenant, cfg.AudienceID, p.Chunk)
	if errors.Is(err, audiences.ErrNotFound) {
		return nil // the audience expired
	} else if err != nil {
		return err
	}
	base := p.Chunk * audiences.ChunkSize
	var skip map[int]bool
	if cfg.OnlyNotSafe {
		if skip, err = s.safeIn(ctx, cfg.FollowUpOf, base, len(recips)); err != nil {
			return err
		}
	}
	// Each new person starts at their first channel: a try queued, with the
	// deadline for an acknowledgement; a person without any of the
	// broadcast's channels is unreachable from the start.
	now := s.opts.Now().UTC()
	starts := now
	if cfg.SendAt != nil && cfg.SendAt.After(now) {
		starts = *cfg.SendAt
	}
	deadline := starts.Add(cfg.AckTimeout)
	people := make([]*broadcasts.Person, 0, len(recips))
	for j, r := range recips {
		if skip[base+j] {
			continue
		}
		person := &broadcasts.Person{Index: base + j, To: r, State: broadcasts.PersonUnreachable, Tries: []broadcasts.Try{}}
		for _, ch := range cfg.Channels {
			if addressFor(r, ch) != "" {
				person.Channels = append(person.Channels, ch)
			}
		}
		if len(person.Channels) > 0 {
			person.State, person.Deadline = broadcasts.PersonQueued, &deadline
			person.Tries = append(person.Tries, broadcasts.Try{Channel: person.Channels[0], MessageID: ledger.NewID(),
				At: now, Status: string(ledger.StatusQueued)})
		}
		people = append(people, person)
	}
	stored, fresh, err := s.opts.Bulk.Broadcasts.StartPeople(ctx, cfg.ID, p.Chunk, people)
	if err != nil {
		return err
	}
	// Each person's send is queued by one of fanoutParallel goroutines:
	// their round trips to Redis go together (Options.Bulk).
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fanoutParallel)
	canceled := false
	for n, person := range stored {
		if n%fanoutParallel == 0 && !canceled {
			if st, err := s.opts.Broadcasts.Get(ctx, "", cfg.ID); err == nil && st.State != broadcasts.StateActive {
				// Canceled meanwhile: the cancel's own pass may have gone
				// by before these people were made, so cancel them here.
				canceled = true
			}
		}
		if canceled {
			if !person.Done() {
				g.Go(func() error { return s.cancelPerson(gctx, cfg, person) })
			}
			continue
		}
		g.Go(func() error { return s.fanoutPerson(gctx, cfg, person, fresh[n]) })
	}
	if err := g.Wait(); err != nil {
		return err // the chunk runs again: what was done is not done twice
	}
	_, err = s.opts.Broadcasts.ChunkDone(ctx, cfg.ID, p.Chunk)
	return err
}

// MaxPollQuestion bounds a poll question (per locale), spoken on calls.
const MaxPollQuestion = 500

// fanoutParallel is how many people of a chunk are sent to at once.
const fanoutParallel = 250

// fanoutPerson queues a new person's first message, or, for a person made
// before a restart, makes sure their current message is queued.
func (s *Server) fanoutPerson(ctx context.Context, cfg *broadcasts.Config, person *broadcasts.Person, fresh bool) error {
	cur := person.Current()
	switch {
	case cur != nil && !person.Done() && (fresh || cur.Status == string(ledger.StatusQueued)):
		return s.ensureTry(ctx, cfg, person, cur)
	case person.Step < 0 && !person.Done():
		return s.advancePerson(ctx, cfg, person.Index, -1) // made pending by an earlier version
	}
	return nil
}

// safeIn returns the people of an earlier broadcast (in an index range)
// who answered that they are safe.
func (s *Server) safeIn(ctx context.Context, orig string, base, n int) (map[int]bool, error) {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = base + i
	}
	people, err := s.opts.Broadcasts.People(ctx, orig, idx)
	if err != nil {
		return nil, err
	}
	safe := map[int]bool{}
	for _, p := range people {
		if p.Answer == "safe" {
			safe[p.Index] = true
		}
	}
	return safe, nil
}

func addressFor(r audiences.Recipient, channel string) string {
	switch channel {
	case "sms", "voice":
		return r.Phone
	case "email":
		return r.Email
	case "wechat":
		return r.WeChatOpenID
	}
	return ""
}

// advancePerson moves a person from step `from` to their next channel and
// queues its message; past their last channel they are unreachable (or
// suppressed, when every channel refused them for an opt-out).
func (s *Server) advancePerson(ctx context.Context, cfg *broadcasts.Config, index, from int) error {
	now := s.opts.Now().UTC()
	var try *broadcasts.Try
	person, err := s.opts.Bulk.Broadcasts.Update(ctx, cfg.ID, index, func(p *broadcasts.Person) (*broadcasts.Event, bool) {
		if p.Done() || p.Step != from {
			return nil, false
		}
		p.Step++
		if p.Step >= len(p.Channels) {
			p.State = broadcasts.PersonUnreachable
			if len(p.Tries) > 0 && allSuppressed(p.Tries) {
				p.State = broadcasts.PersonSuppressed
			}
			return &broadcasts.Event{At: now}, true
		}
		p.Tries = append(p.Tries, broadcasts.Try{Channel: p.Channels[p.Step], MessageID: ledger.NewID(), At: now, Status: string(ledger.StatusQueued)})
		starts := now
		if cfg.SendAt != nil && cfg.SendAt.After(now) {
			starts = *cfg.SendAt
		}
		deadline := starts.Add(cfg.AckTimeout)
		p.Deadline = &deadline
		if p.State != broadcasts.PersonDelivered {
			p.State = broadcasts.PersonQueued
		}
		try = p.Current()
		return &broadcasts.Event{Channel: try.Channel, Status: try.Status, At: now}, true
	})
	if err != nil || try == nil {
		return err
	}
	return s.ensureTry(ctx, cfg, person, try)
}

func allSuppressed(tries []broadcasts.Try) bool {
	for _, t := range tries {
		if t.Status != string(ledger.StatusSuppressed) {
			return false
		}
	}
	return true
}

// ensureTry queues a try's send (a no-op when it is queued already). The
// message's ledger record is written when the send's turn comes
// (RecordBroadcastMessage): queueing a broadcast then costs about what
// queueing its tasks does. The broadcast's sweep moves the person on when
// nobody acknowledges the message by the person's deadline.
func (s *Server) ensureTry(ctx context.Context, cfg *broadcasts.Config, p *broadcasts.Person, t *broadcasts.Try) error {
	req, err := s.tryRequest(ctx, cfg, p, t)
	if err != nil {
		return s.refused(ctx, cfg, p.Index, t, err)
	}
	// The task is keyed by the message id, so a fan-out run again after a
	// restart queues nothing twice.
	return s.enqueueOn(ctx, s.opts.Bulk.Queue, t.MessageID, req)
}

// tryRequest is the ledger record of a try's message, checked and
// rendered as any message is.
func (s *Server) tryRequest(ctx context.Context, cfg *broadcasts.Config, p *broadcasts.Person, t *broadcasts.Try) (ledger.Request, error) {
	req, err := s.prepare(ctx, cfg.Tenant, s.broadcastMessage(cfg, p, t.Channel))
	if err != nil {
		return req, err
	}
	req.Broadcast = cfg.ID + ":" + strconv.Itoa(p.Index)
	req.CreatedAt = t.At
	return req, nil
}

// refused handles a try whose message cannot be made: when this channel
// cannot carry it to this person (no form for it, a value it refuses) the
// try counts as failed and the person moves on; other errors are returned.
func (s *Server) refused(ctx context.Context, cfg *broadcasts.Config, index int, t *broadcasts.Try, err error) error {
	var pr *Problem
	if !errors.As(err, &pr) || pr.Status >= 500 {
		return err
	}
	s.log.Warn("broadcast message refused; trying the next channel", "broadcast_id", cfg.ID, "person", index,
		"channel", t.Channel, "problem", pr.Detail)
	return s.BroadcastStatus(ctx, cfg.ID+":"+strconv.Itoa(index), t.MessageID, ledger.StatusFailed)
}

// RecordBroadcastMessage writes the ledger record of a broadcast's message
// when its send task runs, and says whether it is due. It is due while it
// is its person's current try and queued; a message its person no longer
// waits for (they answered, timed out or were canceled meanwhile) gets no
// record here and is not sent. A message already handed over stays due:
// its record says what happens next.
func (s *Server) RecordBroadcastMessage(ctx context.Context, link, messageID string) (bool, error) {
	cfg, index, ok, err := s.linked(ctx, link)
	if !ok || err != nil {
		return false, err // not a broadcast's, or the broadcast expired
	}
	id := cfg.ID
	p, _, err := s.opts.Bulk.Broadcasts.Person(ctx, id, index)
	if errors.Is(err, broadcasts.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	t := p.TryOf(messageID)
	if t == nil {
		return false, nil
	}
	switch st := ledger.Status(t.Status); {
	case st.Final():
		return false, nil
	case st.Rank() > ledger.StatusQueued.Rank():
		return true, nil // with the provider already: the ledger's claim decides
	case p.Done() || p.Current().MessageID != messageID:
		return false, nil
	}
	// A task refused by its sender's pace runs again: write the record once.
	if ok, err := s.opts.Bulk.Ledger.Exists(ctx, messageID); err != nil || ok {
		return ok, err
	}
	req, err := s.tryRequest(ctx, cfg, p, t)
	if err != nil {
		return false, s.refused(ctx, cfg, index, t, err)
	}
	_, err = s.opts.Bulk.Ledger.Create(ctx, messageID, req)
	return err == nil, err
}

// broadcastMessage is the message of a broadcast to a person on a channel.
func (s *Server) broadcastMessage(cfg *broadcasts.Config, p *broadcasts.Person, channel string) *MessageRequest {
	addr := addressFor(p.To, channel)
	to := &RecipientIn{}
	switch channel {
	case "sms", "voice":
		to.Phone, to.e164 = &addr, true // checked on upload
	case "email":
		to.Email = &addr
	case "wechat":
		to.WeChatOpenID = &addr
	}
	if p.To.TimeZone != "" {
		tz := p.To.TimeZone
		to.TimeZone = &tz
	}
	meta, _ := json.Marshal(map[string]any{"broadcast_id": cfg.ID, "broadcast_person": p.Index})
	m := &MessageRequest{Channel: channel, To: to, Priority: cfg.Priority, Metadata: meta}
	if p.To.Locale != "" {
		l := p.To.Locale
		m.Locale = &l
	}
	if cfg.SendAt != nil {
		at := cfg.SendAt.Format(time.RFC3339)
		m.SendAt = &at
	}
	if cfg.Template != "" {
		t := cfg.Template
		m.Template, m.Vars = &t, cfg.Vars
	} else {
		text := pickText(cfg.Body, p.To.Locale)
		m.Body = &text
		if channel == "email" {
			subj := cfg.Name
			if subj == "" {
				subj = "Message from your care team"
			}
			m.Subject = &subj
		}
	}
	if cfg.Poll != nil && channel != "email" {
		// Answers count for three days: people answer late in a crisis.
		m.ExpectReply = &ExpectReplyIn{Options: cfg.Poll.Options, Within: "72h"}
		if channel == "voice" && cfg.Template == "" {
			keys := slices.Sorted(maps.Keys(cfg.Poll.Options))
			prompt := "Press a key to answer."
			if len(cfg.Poll.Question) > 0 {
				prompt = pickText(cfg.Poll.Question, p.To.Locale)
			}
			m.Gather = &ledger.Gather{Prompt: prompt, Digits: strings.Join(keys, "")}
		}
	}
	return m
}

// pickText chooses a body by locale: exactly, by base language, English,
// then the first in order.
func pickText(body map[string]string, locale string) string {
	if t, ok := body[locale]; ok {
		return t
	}
	base, _, _ := strings.Cut(locale, "-")
	keys := make([]string, 0, len(body))
	for k := range body {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if b, _, _ := strings.Cut(k, "-"); base != "" && strings.EqualFold(b, base) {
			return body[k]
		}
	}
	for _, k := range []string{"en", "en-US", "en-GB"} {
		if t, ok := body[k]; ok {
			return t
		}
	}
	return body[keys[0]]
}

// scheduleSweep queues the broadcast's sweep for a time (keyed by the
// second, so queueing it twice is harmless).
func (s *Server) scheduleSweep(ctx context.Context, id string, at time.Time) error {
	return s.enqueueTask(ctx, TypeBroadcastSweep, fanoutPayload{Broadcast: id},
		asynq.TaskID(fmt.Sprintf("%s:sweep:%d", id, at.Unix())), asynq.ProcessAt(at),
		asynq.Queue(workers.QueueFor(workers.PriorityHigh)), asynq.MaxRetry(50))
}

// sweep moves on the people whose deadline passed, then queues itself a
// second later while the broadcast is active and someone still waits (or
// is still to be made).
func (s *Server) sweep(ctx context.Context, id string) error {
	sum, err := s.opts.Broadcasts.Get(ctx, "", id)
	if errors.Is(err, broadcasts.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	if sum.State != broadcasts.StateActive {
		return nil
	}
	now := s.opts.Now()
	due, waiting, next, err := s.opts.Broadcasts.Due(ctx, id, now, 1000)
	if err != nil {
		return err
	}
	people, err := s.opts.Broadcasts.People(ctx, id, due) // one read for all
	if err != nil {
		return err
	}
	for _, person := range people {
		if person.Done() || person.Deadline == nil || person.Deadline.After(now) {
			continue
		}
		if err := s.timeoutPerson(ctx, &sum.Config, person); err != nil {
			return err
		}
	}
	fannedOut := sum.ChunksDone >= sum.Chunks
	if waiting == 0 && fannedOut {
		return nil // everyone is done
	}
	at := now.Add(time.Second)
	if fannedOut && len(due) < 1000 && next.After(at) {
		at = next // everyone is made and nothing is due before the next deadline
	}
	return s.scheduleSweep(ctx, id, at)
}

// timeoutPerson moves a person on when nobody acknowledged their current
// try in time: the try's message is canceled if the provider does not have
// it yet, and the next channel is tried.
func (s *Server) timeoutPerson(ctx context.Context, cfg *broadcasts.Config, person *broadcasts.Person) error {
	if cur := person.Current(); cur != nil {
		if err := s.cancelTry(ctx, cfg, person.Index, cur.MessageID); err != nil {
			return err
		}
	}
	return s.advancePerson(ctx, cfg, person.Index, person.Step)
}

// cancelTry cancels a try's message unless the provider has it already,
// and records the cancellation in the person's tries. A message not yet
// due has no ledger record: it gets one, canceled, so its send task finds
// it canceled whenever it runs. The task itself stays queued and ends at
// once: removing it from a long pending list would cost more.
func (s *Server) cancelTry(ctx context.Context, cfg *broadcasts.Config, index int, messageID string) error {
	err := s.opts.Bulk.Ledger.Cancel(ctx, cfg.Tenant, messageID)
	if errors.Is(err, ledger.ErrNotFound) {
		p, _, perr := s.opts.Bulk.Broadcasts.Person(ctx, cfg.ID, index)
		if perr != nil {
			return ignoreNotFound(perr)
		}
		t := p.TryOf(messageID)
		if t == nil {
			return nil
		}
		req, rerr := s.tryRequest(ctx, cfg, p, t)
		if rerr != nil {
			var pr *Problem
			if errors.As(rerr, &pr) && pr.Status < 500 {
				// It could never be sent: nothing to cancel in the ledger.
				return s.BroadcastStatus(ctx, cfg.ID+":"+strconv.Itoa(index), messageID, ledger.StatusCanceled)
			}
			return rerr
		}
		if _, err := s.opts.Bulk.Ledger.Create(ctx, messageID, req); err != nil {
			return err
		}
		err = s.opts.Bulk.Ledger.Cancel(ctx, cfg.Tenant, messageID)
	}
	switch {
	case errors.Is(err, ledger.ErrConflict) || errors.Is(err, ledger.ErrNotFound):
		return nil // with the provider (or expired): it runs its course
	case err != nil:
		return err
	}
	return s.BroadcastStatus(ctx, cfg.ID+":"+strconv.Itoa(index), messageID, ledger.StatusCanceled)
}

func ignoreNotFound(err error) error {
	if errors.Is(err, broadcasts.ErrNotFound) {
		return nil
	}
	return err
}

// linked resolves a message's link to its broadcast's configuration and
// the person's index; ok is false when the link is not a broadcast's or
// the broadcast has expired.
func (s *Server) linked(ctx context.Context, link string) (cfg *broadcasts.Config, index int, ok bool, err error) {
	id, index, ok := parseLink(link)
	if !ok {
		return nil, 0, false, nil
	}
	cfg, err = s.broadcastConfig(ctx, id)
	if errors.Is(err, broadcasts.ErrNotFound) {
		return nil, 0, false, nil
	} else if err != nil {
		return nil, 0, false, err
	}
	return cfg, index, true, nil
}

// parseLink splits "bc_…:index".
func parseLink(link string) (string, int, bool) {
	id, idx, ok := strings.Cut(link, ":")
	n, err := strconv.Atoi(idx)
	return id, n, ok && err == nil
}

// BroadcastStatus records a status of a broadcast's message: a message
// that ends without reaching the person moves them on to their next
// channel at once; a delivery acknowledges a broadcast without a poll.
func (s *Server) BroadcastStatus(ctx context.Context, link, messageID string, st ledger.Status) error {
	cfg, index, ok, err := s.linked(ctx, link)
	if !ok || err != nil {
		return err
	}
	id := cfg.ID
	failed := false
	step := 0
	_, err = s.opts.Bulk.Broadcasts.Update(ctx, id, index, func(p *broadcasts.Person) (*broadcasts.Event, bool) {
		t := p.TryOf(messageID)
		if t == nil || ledger.Status(t.Status).Rank() > st.Rank() || t.Status == string(st) {
			return nil, false
		}
		t.Status = string(st)
		current := p.Current().MessageID == messageID
		if current && !p.Done() {
			switch {
			case st == ledger.StatusSent && (p.State == broadcasts.PersonQueued || p.State == broadcasts.PersonPending):
				p.State = broadcasts.PersonSent
			case st == ledger.StatusDelivered && cfg.Poll == nil:
				p.State = broadcasts.PersonAcknowledged
			case st == ledger.StatusDelivered:
				p.State = broadcasts.PersonDelivered
			case st == ledger.StatusFailed || st == ledger.StatusUndelivered || st == ledger.StatusSuppressed:
				failed, step = true, p.Step
			}
		}
		return &broadcasts.Event{Channel: t.Channel, Status: t.Status}, true
	})
	if err != nil || !failed {
		return err
	}
	if sum, err := s.opts.Broadcasts.Get(ctx, "", id); err != nil || sum.State != broadcasts.StateActive {
		return err
	}
	return s.advancePerson(ctx, cfg, index, step)
}

// BroadcastAnswer records a person's answer on any channel: they are
// acknowledged, the poll is tallied by their latest answer, and a message
// still waiting on another channel is canceled.
func (s *Server) BroadcastAnswer(ctx context.Context, link, messageID, channel, option, digits string, at time.Time) error {
	cfg, index, ok, err := s.linked(ctx, link)
	if !ok || err != nil {
		return err
	}
	id := cfg.ID
	if option == "" && digits != "" && cfg.Poll != nil {
		option = cfg.Poll.Options[digits]
	}
	if cfg.Poll != nil && option != "" && !slices.Contains(slices.Collect(maps.Values(cfg.Poll.Options)), option) {
		option = ""
	}
	now := s.opts.Now().UTC()
	if !at.IsZero() {
		now = at.UTC()
	}
	var pending []string
	_, err = s.opts.Bulk.Broadcasts.Update(ctx, id, index, func(p *broadcasts.Person) (*broadcasts.Event, bool) {
		t := p.TryOf(messageID)
		if t == nil || (!at.IsZero() && at.Before(t.At)) {
			return nil, false // not an answer to this broadcast: it came before
		}
		changed := false
		if p.State != broadcasts.PersonAcknowledged && p.State != broadcasts.PersonCanceled {
			p.State, changed = broadcasts.PersonAcknowledged, true
		}
		// People count by their latest answer, by when it was received,
		// whatever order the workers file them in.
		if option != "" && option != p.Answer && (p.AnsweredAt == nil || !now.Before(*p.AnsweredAt)) {
			p.Answer, p.AnsweredAt, p.AnsweredOn, changed = option, &now, channel, true
		}
		pending = pending[:0]
		for _, t := range p.Tries {
			if t.MessageID != messageID && ledger.Status(t.Status).Rank() < ledger.StatusSent.Rank() {
				pending = append(pending, t.MessageID)
			}
		}
		return &broadcasts.Event{Channel: channel, At: now}, changed
	})
	if err != nil {
		return err
	}
	for _, m := range pending {
		if err := s.cancelTry(ctx, cfg, index, m); err != nil {
			return err
		}
	}
	return nil
}

// cancelPeople cancels what a canceled broadcast has not sent.
func (s *Server) cancelPeople(ctx context.Context, id string) error {
	cfg, err := s.broadcastConfig(ctx, id)
	if errors.Is(err, broadcasts.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	// People are canceled fanoutParallel at a time; their round trips go
	// together (Options.Bulk).
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fanoutParallel)
	err = s.opts.Broadcasts.Scan(ctx, id, func(p *broadcasts.Person) error {
		if p.Done() {
			return nil
		}
		g.Go(func() error { return s.cancelPerson(gctx, cfg, p) })
		return gctx.Err()
	})
	return errors.Join(g.Wait(), err)
}

// cancelPerson cancels what still waits to be sent to a person.
func (s *Server) cancelPerson(ctx context.Context, cfg *broadcasts.Config, p *broadcasts.Person) error {
	for _, t := range p.Tries {
		if ledger.Status(t.Status).Rank() < ledger.StatusSent.Rank() {
			if err := s.cancelTry(ctx, cfg, p.Index, t.MessageID); err != nil {
				return err
			}
		}
	}
	_, err := s.opts.Bulk.Broadcasts.Update(ctx, cfg.ID, p.Index, func(p *broadcasts.Person) (*broadcasts.Event, bool) {
		if p.Done() || p.State == broadcasts.PersonSent || p.State == broadcasts.PersonDelivered {
			return nil, false
		}
		p.State = broadcasts.PersonCanceled
		return &broadcasts.Event{}, true
	})
	return err
}
