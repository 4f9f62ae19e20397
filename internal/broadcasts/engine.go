package broadcasts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"
	"golang.org/x/sync/errgroup"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/address"
	"github.com/patientmsg/gateway/internal/audiences"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/ratelimit"
	"github.com/patientmsg/gateway/templates"
	"github.com/patientmsg/gateway/workers"
)

// Engine runs crisis broadcasts: it checks and creates them, fans each
// out to its audience in chunks, cascades every person through the
// broadcast's channels until they acknowledge, times them out (the sweep),
// files their answers and cancels what has not been sent. Every message it
// makes goes through Messages, as the API's do. Its worker tasks are in
// package workers; they call Fanout, Sweep and CancelPeople.
type Engine struct {
	// Messages makes each person's messages (required).
	Messages *messaging.Service
	// Store keeps the broadcasts and their people, Audiences the lists
	// they go to (required).
	Store     *Store
	Audiences *audiences.Store
	// Queue queues the engine's own tasks (fan-out, sweep, cancel).
	Queue messaging.Enqueuer
	// Bulk carries the writes for a broadcast's people: the same stores on
	// a Redis client that sends the round trips of many people together
	// (package autopipe). Zero fields: Messages.Ledger, Queue and Store.
	Bulk Bulk
	// Channels are the configured channels; Templates and TemplateChain
	// render a broadcast's template to check it before it starts.
	Channels      *channels.Registry
	Templates     *templates.Store
	TemplateChain templates.Chain
	// MinAckTimeout is the shortest ack_timeout a broadcast may ask for
	// (0: a minute).
	MinAckTimeout time.Duration
	// DefaultRegion is the phone region of an inline audience's numbers
	// without a country code ("" requires +country codes).
	DefaultRegion string
	// Senders and Prices feed a preview's time and cost estimates (nil:
	// none).
	Senders *ratelimit.Senders
	Prices  Prices
	// Incidents groups broadcasts under a crisis (nil: incident_id is
	// refused).
	Incidents Incidents
	Logger    *slog.Logger
	// Now is the clock (required).
	Now func() time.Time

	mu      sync.Mutex
	configs map[string]*Config
}

// Incidents are the crises broadcasts are updates of (package incidents).
type Incidents interface {
	// Check says whether a broadcast may be linked to the incident: nil,
	// or an error for which IsIncidentRefusal is true (unknown, closed),
	// or the store's.
	Check(ctx context.Context, tenant, id string) error
	// Link records the broadcast, sent at at, as the incident's latest
	// update.
	Link(ctx context.Context, tenant, id, broadcast string, at time.Time) error
	// Refused says whether an error of Check is the incident's answer
	// (unknown or closed) rather than the store failing, and why.
	Refused(err error) (string, bool)
}

// Bulk are the stores a broadcast's fan-out, sweep and status changes
// write through.
type Bulk struct {
	Ledger *ledger.Ledger
	Queue  messaging.Enqueuer
	Store  *Store
}

// Init fills the engine's defaults; call it once before use.
func (e *Engine) Init() *Engine {
	if e.Bulk.Ledger == nil {
		e.Bulk.Ledger = e.Messages.Ledger
	}
	if e.Bulk.Queue == nil {
		e.Bulk.Queue = e.Queue
	}
	if e.Bulk.Store == nil {
		e.Bulk.Store = e.Store
	}
	return e
}

func (e *Engine) log() *slog.Logger {
	if e.Logger == nil {
		return slog.Default()
	}
	return e.Logger
}

// Create checks a broadcast, stores it (with its inline audience) and
// queues its fan-out in chunks; it returns at once, whatever the
// audience's size. A bad request is a *messaging.InvalidError.
func (e *Engine) Create(ctx context.Context, tenant string, in *Request) (*Config, error) {
	now := e.Now().UTC()
	cfg, audience, err := e.validateBroadcast(ctx, tenant, in, now)
	if err != nil {
		return nil, err
	}
	if audience != nil {
		a, err := e.Audiences.Save(ctx, tenant, audience)
		if err != nil {
			return nil, err
		}
		cfg.AudienceID, cfg.Total, cfg.Chunks = a.ID, a.Count, a.Chunks
	}
	// Linked first: should the broadcast not be stored, the incident
	// names a broadcast it cannot find, and shows nothing for it.
	if cfg.IncidentID != "" {
		if err := e.Incidents.Link(ctx, tenant, cfg.IncidentID, cfg.ID, cfg.CreatedAt); err != nil {
			if why, refused := e.Incidents.Refused(err); refused { // closed meanwhile
				return nil, &messaging.InvalidError{Errors: []messaging.FieldError{{Field: "incident_id", Detail: why}}}
			}
			return nil, err
		}
	}
	if err := e.Store.Create(ctx, cfg); err != nil {
		return nil, err
	}
	// One task fans the audience out, chunk after chunk (Fanout). The
	// first chunk is held for it while it waits for a worker: should the
	// task be lost, the sweep sees the chunk stall.
	if cfg.Chunks > 0 {
		if err := e.Store.FanoutRunning(ctx, cfg.ID, 0, "", now.Add(FanoutQueuedLease)); err != nil {
			return nil, err
		}
		// The fan-out runs in the main pool, so the crisis pool is free to
		// send the messages it makes as soon as they are queued.
		if err := e.enqueueTaskOn(ctx, e.Bulk.Queue, workers.TypeBroadcastFanout, workers.BroadcastPayload{Broadcast: cfg.ID, Chunk: 0},
			asynq.TaskID(cfg.ID+":fanout:0"), asynq.Queue(workers.QueueFor(workers.PriorityHigh)), asynq.MaxRetry(50)); err != nil {
			return nil, err
		}
	}
	if err := e.scheduleSweep(ctx, cfg.ID, e.Now().Add(time.Second)); err != nil {
		return nil, err
	}
	e.log().Info("broadcast created", "tenant", tenant, "broadcast_id", cfg.ID, "recipients", cfg.Total, "chunks", cfg.Chunks)
	return cfg, nil
}

// ErrAlreadyCanceled: the broadcast was canceled before.
var ErrAlreadyCanceled = errors.New("the broadcast was already canceled")

// Cancel stops a broadcast: nobody is sent anything new, and the messages
// not yet with a provider are canceled (by a worker task, CancelPeople).
func (e *Engine) Cancel(ctx context.Context, id string) error {
	ok, err := e.Store.SetState(ctx, id, StateCanceled)
	if err != nil {
		return err
	}
	if !ok {
		return ErrAlreadyCanceled
	}
	return e.enqueueTask(ctx, workers.TypeBroadcastCancel, workers.BroadcastPayload{Broadcast: id},
		asynq.TaskID(id+":cancel"), asynq.Queue(workers.QueueFor(workers.PriorityCrisis)), asynq.MaxRetry(50))
}

// Broadcast limits.
const (
	MaxInlineAudience  = 10000
	DefaultAckTimeout  = 10 * time.Minute
	MaxBroadcastOption = 9
)

// Request is the body of POST /v1/
type Request struct {
	Name        string                `json:"name"`
	Audience    []audiences.Recipient `json:"audience"`
	AudienceID  string                `json:"audience_csv_upload_id"`
	Channels    []string              `json:"channels"`
	Template    *string               `json:"template"`
	Vars        map[string]string     `json:"vars"`
	Body        map[string]string     `json:"body"`
	Poll        *Poll                 `json:"poll"`
	AckTimeout  string                `json:"ack_timeout"`
	Priority    string                `json:"priority"`
	SendAt      *string               `json:"send_at"`
	FollowUpOf  string                `json:"follow_up_of"`
	OnlyNotSafe bool                  `json:"only_not_safe"`
	IncidentID  string                `json:"incident_id"`
}

func (e *Engine) enqueueTask(ctx context.Context, typ string, payload any, opts ...asynq.Option) error {
	return e.enqueueTaskOn(ctx, e.Queue, typ, payload, opts...)
}

func (e *Engine) enqueueTaskOn(ctx context.Context, q messaging.Enqueuer, typ string, payload any, opts ...asynq.Option) error {
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
func (e *Engine) validateBroadcast(ctx context.Context, tenant string, in *Request, now time.Time) (*Config, *audiences.ParseResult, error) {
	var errs []messaging.FieldError
	bad := func(field, format string, a ...any) {
		errs = append(errs, messaging.FieldError{Field: field, Detail: fmt.Sprintf(format, a...)})
	}
	cfg := &Config{ID: NewID(), Tenant: tenant, Name: strings.TrimSpace(in.Name), Vars: in.Vars,
		Body: in.Body, Poll: in.Poll, Priority: in.Priority, CreatedAt: now, FollowUpOf: in.FollowUpOf}
	if len(cfg.Name) > 200 {
		bad("name", "is longer than 200 characters")
	}
	configured := e.Channels.Names()
	if len(in.Channels) == 0 || len(in.Channels) > 4 {
		bad("channels", "must list 1 to 4 channels, tried in order until the person acknowledges, e.g. [\"wechat\", \"sms\", \"voice\"]")
	}
	for i, ch := range in.Channels {
		switch {
		case !slices.Contains(configured, ch):
			bad(fmt.Sprintf("channels[%d]", i), "%q is not a configured channel; configured: %s", messaging.Clip(ch), strings.Join(configured, ", "))
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
		least := e.MinAckTimeout
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
		case t.After(now.Add(messaging.MaxScheduleAhead)):
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
			if _, ok := address.Locale(loc); !ok && loc != "" {
				bad("poll.question", "%q is not a locale such as en or zh-CN", messaging.Clip(loc))
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
		e.checkBroadcastTemplate(ctx, tenant, cfg, bad)
	case len(in.Body) > 0:
		for loc, text := range in.Body {
			if _, ok := address.Locale(loc); !ok && loc != "" {
				bad("body", "%q is not a locale such as en or zh-CN", messaging.Clip(loc))
			}
			if strings.TrimSpace(text) == "" || len([]rune(text)) > 1600 {
				bad("body."+messaging.Clip(loc), "must be 1 to 1,600 characters")
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
			if err := audiences.ValidateRecipient(&r, e.DefaultRegion); err != nil {
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
		a, err := e.Audiences.Get(ctx, tenant, in.AudienceID)
		if errors.Is(err, audiences.ErrNotFound) {
			bad("audience_csv_upload_id", "is not an audience of this tenant (uploads are kept 7 days)")
		} else if err != nil {
			return nil, nil, err
		} else {
			cfg.AudienceID, cfg.Total, cfg.Chunks = a.ID, a.Count, a.Chunks
		}
	case in.FollowUpOf != "":
		orig, err := e.Store.Get(ctx, tenant, in.FollowUpOf)
		if errors.Is(err, ErrNotFound) {
			bad("follow_up_of", "is not a broadcast of this tenant")
		} else if err != nil {
			return nil, nil, err
		} else {
			cfg.AudienceID, cfg.Total, cfg.Chunks = orig.AudienceID, orig.Total, orig.Chunks
			cfg.OnlyNotSafe = in.OnlyNotSafe
			if in.OnlyNotSafe {
				// Those safe now are left out (the fan-out checks again).
				safe, err := e.Store.Count(ctx, orig.ID, "ans:safe")
				if err != nil {
					return nil, nil, err
				}
				cfg.Total = max(cfg.Total-int(safe), 0)
			}
		}
	}
	if id := strings.TrimSpace(in.IncidentID); id != "" {
		cfg.IncidentID = id
		if e.Incidents == nil {
			bad("incident_id", "incidents are not available on this gateway")
		} else if err := e.Incidents.Check(ctx, tenant, id); err != nil {
			why, refused := e.Incidents.Refused(err)
			if !refused {
				return nil, nil, err
			}
			bad("incident_id", "%s", why)
		}
	}
	if in.OnlyNotSafe && in.FollowUpOf == "" {
		bad("only_not_safe", "only applies with follow_up_of")
	}
	if len(errs) > 0 {
		return nil, nil, &messaging.InvalidError{Errors: errs}
	}
	return cfg, inline, nil
}

// checkBroadcastTemplate renders the template on every channel with the
// given variables, so a mistake is a 422 now rather than a failed fan-out.
func (e *Engine) checkBroadcastTemplate(ctx context.Context, tenant string, cfg *Config, bad func(string, string, ...any)) {
	if e.Templates == nil {
		bad("template", "templates are not available on this gateway")
		return
	}
	t, err := e.Templates.Get(ctx, tenant, cfg.Template)
	if errors.Is(err, templates.ErrNotFound) {
		bad("template", "%q is not a template of this tenant or a built-in one; GET /v1/templates lists them", messaging.Clip(cfg.Template))
		return
	} else if err != nil {
		bad("template", "could not be read: try again")
		return
	}
	set, _ := e.Messages.SettingsOf(ctx, tenant)
	for _, ch := range cfg.Channels {
		if _, err := t.Render(e.TemplateChain, ch, "", cfg.Vars, set.AllowPHI); err != nil {
			for _, fe := range messaging.TemplateError(cfg.Template, ch, err).Errors {
				bad(fe.Field, "%s (channel %s)", fe.Detail, ch)
			}
		}
	}
}

// maxCachedConfigs bounds the engine's cache of broadcasts'
// configurations: a few crisis broadcasts run at once, not thousands.
const maxCachedConfigs = 256

// broadcastConfig reads a broadcast's configuration, which never changes,
// through a bounded cache: status callbacks and answers of a running
// broadcast come by the thousand.
func (e *Engine) broadcastConfig(ctx context.Context, id string) (*Config, error) {
	e.mu.Lock()
	c, ok := e.configs[id]
	e.mu.Unlock()
	if ok {
		return c, nil
	}
	sum, err := e.Store.Get(ctx, "", id)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	if e.configs == nil || len(e.configs) >= maxCachedConfigs {
		e.configs = make(map[string]*Config, maxCachedConfigs)
	}
	e.configs[id] = &sum.Config
	e.mu.Unlock()
	return &sum.Config, nil
}

// Fanout makes the people of the audience, chunk by chunk from p.Chunk
// to the last, and sends each the first channel they have. The chunks go
// in the audience's order, one after the other, so the sends are queued in
// that order: a fan-out stopped by a dead worker and taken over later
// (requeueStalled) queues the rest of the audience behind what was queued
// before, in the same order as without the stop, instead of behind chunks
// that ran meanwhile. It is safe to run again, and to run twice at once:
// each chunk is claimed by one run at a time (a run finding a chunk
// claimed by another that is alive leaves the rest to it), people already
// made are not made twice, and a message already queued is not queued
// again.
func (e *Engine) Fanout(ctx context.Context, p workers.BroadcastPayload) error {
	sum, err := e.Store.Get(ctx, "", p.Broadcast)
	if errors.Is(err, ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	if sum.State != StateActive {
		return nil
	}
	cfg := &sum.Config
	run := ledger.NewID()
	// The next chunk's people are made while this chunk's sends are
	// queued (making them is a script of its own, and reads the audience):
	// the sends still go in the audience's order, and making people twice
	// makes nobody twice.
	var next *madeAhead
	defer func() { next.wait() }()
	swept := int64(-1) // the second of the sweep last queued (fanoutChunk)
	for chunk := p.Chunk; chunk < cfg.Chunks; chunk++ {
		// Say the fan-out runs, and keep saying it: should this worker die,
		// the sweep sees the chunk stall and queues it again at once,
		// rather than after Asynq's lease lapses (a minute).
		now := e.Now()
		claim, err := e.Store.ClaimChunk(ctx, cfg.ID, chunk, run, now, now.Add(FanoutLease))
		if err != nil {
			return err
		}
		switch claim {
		case ChunkDone:
			continue // a repair's second run, or a task run again
		case ChunkTaken:
			return nil // another run goes on from here
		}
		var made *madeChunk
		if next != nil && next.chunk == chunk {
			made, err = next.wait()
		} else {
			next.wait()
			made, err = e.makeChunk(ctx, cfg, chunk)
		}
		next = nil
		if err != nil {
			return err
		}
		if chunk+1 < cfg.Chunks {
			next = e.makeAhead(ctx, cfg, chunk+1)
		}
		// An error other than the broadcast's expiry (nothing more to
		// make) runs the chunk again: what was done is not done twice.
		if st, err := e.fanoutChunk(ctx, cfg, chunk, run, made, &swept); err != nil {
			return ignoreNotFound(err)
		} else if st != StateActive {
			// Canceled: the cancel's pass takes the people made, but may
			// have gone by before the next chunk's were.
			if ahead, err := next.wait(); err == nil && ahead != nil {
				return e.cancelPeople(ctx, cfg, ahead.people)
			}
			return nil
		}
	}
	return nil
}

// madeChunk is a chunk's people as stored, and which of them are new (nil
// when the audience has expired).
type madeChunk struct {
	people []*Person
	fresh  []bool
}

// madeAhead is a chunk's people being made in the background.
type madeAhead struct {
	chunk int
	done  chan struct{}
	made  *madeChunk
	err   error
}

func (e *Engine) makeAhead(ctx context.Context, cfg *Config, chunk int) *madeAhead {
	a := &madeAhead{chunk: chunk, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		a.made, a.err = e.makeChunk(ctx, cfg, chunk)
	}()
	return a
}

// wait waits for the chunk's people (nothing on a nil madeAhead).
func (a *madeAhead) wait() (*madeChunk, error) {
	if a == nil {
		return nil, nil
	}
	<-a.done
	return a.made, a.err
}

// cancelPeople cancels people made after the cancel's own pass.
func (e *Engine) cancelPeople(ctx context.Context, cfg *Config, people []*Person) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fanoutParallel)
	for _, person := range people {
		if !person.Done() {
			g.Go(func() error { return e.cancelPerson(gctx, cfg, person) })
		}
	}
	return g.Wait()
}

// fanoutChunk queues the first message of each person of one chunk of the
// audience, made by makeChunk; run is the fan-out that claimed the chunk.
// Before the chunk is marked done the next one is claimed for the same
// run, so that at every moment some chunk has a live lease while the
// fan-out runs: a worker dying between two chunks is seen as a stall too.
// It returns the broadcast's state once the chunk is done (ErrNotFound
// once it expired). swept is the second of the sweep the run last queued.
func (e *Engine) fanoutChunk(ctx context.Context, cfg *Config, chunk int, run string, made *madeChunk, swept *int64) (string, error) {
	p := workers.BroadcastPayload{Broadcast: cfg.ID, Chunk: chunk}
	// The sweep that times people out runs while anyone waits; should its
	// chain have broken (a lost task), the fan-out starts it again. Its
	// task is named by its second, so a run queues it once a second at
	// most: a second queued in the same second would be the same task.
	if at := e.Now().Add(time.Second); at.Unix() != *swept {
		if err := e.scheduleSweep(ctx, cfg.ID, at); err != nil {
			return "", err
		}
		*swept = at.Unix()
	}
	if made == nil {
		return e.Store.State(ctx, cfg.ID) // the audience expired
	}
	stored, fresh := made.people, made.fresh
	// Each person's send is queued by one of fanoutParallel goroutines:
	// their round trips to Redis go together (Options.Bulk).
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fanoutParallel)
	canceled := false
	for n, person := range stored {
		if n%fanoutParallel == 0 && n > 0 {
			if err := e.Store.FanoutRunning(ctx, cfg.ID, p.Chunk, run, e.Now().Add(FanoutLease)); err != nil {
				return "", err
			}
		}
		if n%fanoutParallel == 0 && !canceled {
			if st, err := e.Store.State(ctx, cfg.ID); err == nil && st != StateActive {
				// Canceled meanwhile: the cancel's own pass may have gone
				// by before these people were made, so cancel them here.
				canceled = true
			}
		}
		if canceled {
			if !person.Done() {
				g.Go(func() error { return e.cancelPerson(gctx, cfg, person) })
			}
			continue
		}
		g.Go(func() error { return e.fanoutPerson(gctx, cfg, person, fresh[n]) })
	}
	if err := g.Wait(); err != nil {
		return "", err
	}
	next := p.Chunk + 1
	if next >= cfg.Chunks {
		next = -1
	}
	return e.Store.FinishChunk(ctx, cfg.ID, p.Chunk, next, run, e.Now().Add(FanoutLease))
}

// makeChunk makes the people of one chunk of the audience (those made
// before are kept as they are): nil when the audience has expired.
func (e *Engine) makeChunk(ctx context.Context, cfg *Config, chunk int) (*madeChunk, error) {
	recips, err := e.Audiences.Chunk(ctx, cfg.Tenant, cfg.AudienceID, chunk)
	if errors.Is(err, audiences.ErrNotFound) {
		return nil, nil // the audience expired
	} else if err != nil {
		return nil, err
	}
	base := chunk * audiences.ChunkSize
	var skip map[int]bool
	if cfg.OnlyNotSafe {
		if skip, err = e.safeIn(ctx, cfg.FollowUpOf, base, len(recips)); err != nil {
			return nil, err
		}
	}
	// Each new person starts at their first channel: a try queued, with the
	// deadline for an acknowledgement; a person without any of the
	// broadcast's channels is unreachable from the start.
	now := e.Now().UTC()
	starts := now
	if cfg.SendAt != nil && cfg.SendAt.After(now) {
		starts = *cfg.SendAt
	}
	deadline := starts.Add(cfg.AckTimeout)
	people := make([]*Person, 0, len(recips))
	for j, r := range recips {
		if skip[base+j] {
			continue
		}
		person := &Person{Index: base + j, To: r, State: PersonUnreachable, Tries: []Try{}}
		for _, ch := range cfg.Channels {
			if addressFor(r, ch) != "" {
				person.Channels = append(person.Channels, ch)
			}
		}
		if len(person.Channels) > 0 {
			person.State, person.Deadline = PersonQueued, &deadline
			person.Tries = append(person.Tries, Try{Channel: person.Channels[0], MessageID: ledger.NewID(),
				At: now, Status: string(ledger.StatusQueued)})
		}
		people = append(people, person)
	}
	stored, fresh, err := e.Bulk.Store.StartPeople(ctx, cfg.ID, chunk, people)
	if err != nil {
		return nil, err
	}
	return &madeChunk{people: stored, fresh: fresh}, nil
}

// MaxPollQuestion bounds a poll question (per locale), spoken on calls.
const MaxPollQuestion = 500

// FanoutLease is how long a running fan-out's word lasts: a chunk not done
// and not heard from for this long is queued again by the sweep (its
// worker died). A fan-out run twice makes nobody twice and queues nothing
// twice.
const FanoutLease = 5 * time.Second

// FanoutQueuedLease is how long a queued fan-out task may wait for a
// worker before the sweep queues another (the first may have been lost).
const FanoutQueuedLease = 15 * time.Second

// fanoutParallel is how many people of a chunk are sent to at once.
const fanoutParallel = 500

// fanoutPerson queues a new person's first message, or, for a person made
// before a restart, makes sure their current message is queued.
func (e *Engine) fanoutPerson(ctx context.Context, cfg *Config, person *Person, fresh bool) error {
	cur := person.Current()
	switch {
	case cur != nil && !person.Done() && (fresh || cur.Status == string(ledger.StatusQueued)):
		return e.ensureTry(ctx, cfg, person, cur)
	case person.Step < 0 && !person.Done():
		return e.advancePerson(ctx, cfg, person.Index, -1) // made pending by an earlier version
	}
	return nil
}

// safeIn returns the people of an earlier broadcast (in an index range)
// who answered that they are safe.
func (e *Engine) safeIn(ctx context.Context, orig string, base, n int) (map[int]bool, error) {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = base + i
	}
	people, err := e.Store.People(ctx, orig, idx)
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

// addressFor is a person's address on a channel ("" when they have none).
func addressFor(r audiences.Recipient, channel string) string {
	return channels.AddressOf(channel, ledger.Recipient{Phone: r.Phone, Email: r.Email, WeChatOpenID: r.WeChatOpenID})
}

// advancePerson moves a person from step `from` to their next channel and
// queues its message; past their last channel they are unreachable (or
// suppressed, when every channel refused them for an opt-out).
func (e *Engine) advancePerson(ctx context.Context, cfg *Config, index, from int) error {
	now := e.Now().UTC()
	var try *Try
	person, err := e.Bulk.Store.Update(ctx, cfg.ID, index, func(p *Person) (*Event, bool) {
		if p.Done() || p.Step != from {
			return nil, false
		}
		p.Step++
		if p.Step >= len(p.Channels) {
			p.State = PersonUnreachable
			if len(p.Tries) > 0 && allSuppressed(p.Tries) {
				p.State = PersonSuppressed
			}
			return &Event{At: now}, true
		}
		p.Tries = append(p.Tries, Try{Channel: p.Channels[p.Step], MessageID: ledger.NewID(), At: now, Status: string(ledger.StatusQueued)})
		starts := now
		if cfg.SendAt != nil && cfg.SendAt.After(now) {
			starts = *cfg.SendAt
		}
		deadline := starts.Add(cfg.AckTimeout)
		p.Deadline = &deadline
		if p.State != PersonDelivered {
			p.State = PersonQueued
		}
		try = p.Current()
		return &Event{Channel: try.Channel, Status: try.Status, At: now}, true
	})
	if err != nil || try == nil {
		return err
	}
	return e.ensureTry(ctx, cfg, person, try)
}

func allSuppressed(tries []Try) bool {
	for _, t := range tries {
		if t.Status != string(ledger.StatusSuppressed) {
			return false
		}
	}
	return true
}

// ensureTry queues a try's send (a no-op when it is queued already). The
// message's ledger record is written when the send's turn comes
// (RecordMessage): queueing a broadcast then costs about what
// queueing its tasks does. The broadcast's sweep moves the person on when
// nobody acknowledges the message by the person's deadline.
func (e *Engine) ensureTry(ctx context.Context, cfg *Config, p *Person, t *Try) error {
	req, err := e.tryRequest(ctx, cfg, p, t)
	if err != nil {
		return e.refused(ctx, cfg, p.Index, t, err)
	}
	// The task is keyed by the message id, so a fan-out run again after a
	// restart queues nothing twice.
	return e.Messages.Enqueue(ctx, e.Bulk.Queue, t.MessageID, req)
}

// tryRequest is the ledger record of a try's message, checked and
// rendered as any message is.
func (e *Engine) tryRequest(ctx context.Context, cfg *Config, p *Person, t *Try) (ledger.Request, error) {
	// The audience's addresses were checked on upload.
	to := ledger.Recipient{Phone: p.To.Phone, Email: p.To.Email, WeChatOpenID: p.To.WeChatOpenID}
	req, err := e.Messages.PrepareChecked(ctx, cfg.Tenant, e.broadcastMessage(cfg, p, t.Channel), to)
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
func (e *Engine) refused(ctx context.Context, cfg *Config, index int, t *Try, err error) error {
	var invalid *messaging.InvalidError
	if !errors.As(err, &invalid) {
		return err
	}
	e.log().Warn("broadcast message refused; trying the next channel", "broadcast_id", cfg.ID, "person", index,
		"channel", t.Channel, "problem", invalid.Error())
	return e.Status(ctx, cfg.ID+":"+strconv.Itoa(index), t.MessageID, ledger.StatusFailed)
}

// RecordMessage writes the ledger record of a broadcast's message
// when its send task runs, and says whether it is due. It is due while it
// is its person's current try and queued; a message its person no longer
// waits for (they answered, timed out or were canceled meanwhile) gets no
// record here and is not sent. A message already handed over stays due:
// its record says what happens next.
func (e *Engine) RecordMessage(ctx context.Context, link, messageID string) (bool, error) {
	cfg, index, ok, err := e.linked(ctx, link)
	if !ok || err != nil {
		return false, err // not a broadcast's, or the broadcast expired
	}
	id := cfg.ID
	p, _, err := e.Bulk.Store.Person(ctx, id, index)
	if errors.Is(err, ErrNotFound) {
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
		// The person no longer waits for it. But a worker may have handed
		// it over already, its roster update lost (Redis down between the
		// two): a record past queued is with the provider, perhaps, and
		// the ledger's claim decides (waits for the provider's report).
		st, found, err := e.recordStatus(ctx, cfg.Tenant, messageID)
		return found && !st.Final() && st.Rank() > ledger.StatusQueued.Rank(), err
	}
	// A task refused by its sender's pace, or retried after a failed
	// attempt, runs again: write the record once.
	if ok, err := e.Bulk.Ledger.Known(ctx, cfg.Tenant, messageID); err != nil || ok {
		if err != nil {
			return false, err
		}
		return e.dueAgain(ctx, cfg, p, messageID)
	}
	req, err := e.tryRequest(ctx, cfg, p, t)
	if err != nil {
		return false, e.refused(ctx, cfg, index, t, err)
	}
	_, err = e.Bulk.Ledger.Create(ctx, messageID, req)
	return err == nil, err
}

// dueAgain says whether a message whose task runs again (its record
// written by an earlier run) is still due. It is, unless its broadcast was
// canceled: the cancel left this person to the message because a worker
// was handing it over then, and that attempt failed and is retried. The
// person is canceled now, the message with them, unless a provider may
// have it (an attempt whose answer was lost): then the ledger's claim
// decides, and the person follows its reports.
func (e *Engine) dueAgain(ctx context.Context, cfg *Config, p *Person, messageID string) (bool, error) {
	state, err := e.Store.State(ctx, cfg.ID)
	if errors.Is(err, ErrNotFound) {
		return true, nil // the broadcast expired: the record decides
	} else if err != nil {
		return false, err
	}
	if state != StateCanceled {
		return true, nil
	}
	if err := e.cancelPerson(ctx, cfg, p); err != nil {
		return false, err
	}
	st, found, err := e.recordStatus(ctx, cfg.Tenant, messageID)
	return found && !st.Final(), err
}

// recordStatus is a message's status in the ledger; found is false when
// it has no record.
func (e *Engine) recordStatus(ctx context.Context, tenant, id string) (st ledger.Status, found bool, err error) {
	m, err := e.Bulk.Ledger.Get(ctx, tenant, id)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return "", false, nil
	case err != nil:
		return "", false, err
	}
	return m.Status, true, nil
}

// broadcastMeta is a broadcast message's metadata: which broadcast and
// person it is for (a struct, not a map: it is encoded for every person).
type broadcastMeta struct {
	ID     string `json:"broadcast_id"`
	Person int    `json:"broadcast_person"`
}

// broadcastMessage is the message of a broadcast to a person on a channel.
func (e *Engine) broadcastMessage(cfg *Config, p *Person, channel string) *messaging.Draft {
	addr := addressFor(p.To, channel)
	to := messaging.ToAddress(channel, addr)
	if p.To.TimeZone != "" {
		tz := p.To.TimeZone
		to.TimeZone = &tz
	}
	meta, _ := json.Marshal(broadcastMeta{ID: cfg.ID, Person: p.Index})
	m := &messaging.Draft{Channel: channel, To: to, Priority: cfg.Priority, Metadata: meta}
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
		m.ExpectReply = &messaging.Expect{Options: cfg.Poll.Options, Within: "72h"}
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
func (e *Engine) scheduleSweep(ctx context.Context, id string, at time.Time) error {
	return e.enqueueTask(ctx, workers.TypeBroadcastSweep, workers.BroadcastPayload{Broadcast: id},
		asynq.TaskID(fmt.Sprintf("%s:sweep:%d", id, at.Unix())), asynq.ProcessAt(at),
		asynq.Queue(workers.QueueFor(workers.PriorityHigh)), asynq.MaxRetry(50))
}

// Sweep moves on the people whose deadline passed, then queues itself a
// second later while the broadcast is active and someone still waits (or
// is still to be made).
func (e *Engine) Sweep(ctx context.Context, id string) error {
	sum, err := e.Store.Get(ctx, "", id)
	if errors.Is(err, ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	if sum.State != StateActive {
		return nil
	}
	now := e.Now()
	if sum.ChunksDone < sum.Chunks {
		// While the fan-out runs, the next sweep is queued first: should
		// this worker die mid-sweep, the chain goes on a second later and
		// still takes over a fan-out that died with it (rather than when
		// Asynq takes this task back, a minute or two later). The end of
		// this sweep queues the same task (one id per second).
		if err := e.scheduleSweep(ctx, id, now.Add(time.Second)); err != nil {
			return err
		}
	}
	due, waiting, next, err := e.Store.Due(ctx, id, now, 1000)
	if err != nil {
		return err
	}
	people, err := e.Store.People(ctx, id, due) // one read for all
	if err != nil {
		return err
	}
	for _, person := range people {
		if person.Done() || person.Deadline == nil || person.Deadline.After(now) {
			continue
		}
		if err := e.timeoutPerson(ctx, &sum.Config, person); err != nil {
			return err
		}
	}
	fannedOut := sum.ChunksDone >= sum.Chunks
	if !fannedOut {
		if err := e.requeueStalled(ctx, &sum.Config, now); err != nil {
			return err
		}
	}
	if waiting == 0 && fannedOut {
		// Everyone is done: check the roster against the messages once.
		first, err := e.Store.FirstQuiet(ctx, id)
		if err != nil || !first {
			return err
		}
		r, err := e.Repair(ctx, id)
		if err != nil || r.Fixed() == 0 {
			return err
		}
		// Someone moved on or was queued again: keep sweeping.
		return e.scheduleSweep(ctx, id, now.Add(time.Second))
	}
	at := now.Add(time.Second)
	if fannedOut && len(due) < 1000 && next.After(at) {
		at = next // everyone is made and nothing is due before the next deadline
	}
	return e.scheduleSweep(ctx, id, at)
}

// requeueStalled queues again the fan-out of every chunk whose worker
// stopped saying it runs (killed, or cut off from Redis), at most once a
// lease: the people it had made wait seconds, not Asynq's lease of a
// minute. The new task goes on from that chunk to the last; the dead
// worker's own task runs again later and finds the chunks done or taken.
func (e *Engine) requeueStalled(ctx context.Context, cfg *Config, now time.Time) error {
	stalled, err := e.Store.StalledChunks(ctx, cfg.ID, cfg.Chunks, now)
	if err != nil {
		return err
	}
	for _, chunk := range stalled {
		e.log().Warn("a broadcast's fan-out stopped (its worker died?); queued again", "broadcast_id", cfg.ID, "chunk", chunk)
		id := fmt.Sprintf("%s:fanout:%d:again:%d", cfg.ID, chunk, now.UnixMilli()/FanoutLease.Milliseconds())
		if err := e.Store.FanoutRunning(ctx, cfg.ID, chunk, "", now.Add(FanoutQueuedLease)); err != nil {
			return err
		}
		if err := e.enqueueTaskOn(ctx, e.Queue, workers.TypeBroadcastFanout, workers.BroadcastPayload{Broadcast: cfg.ID, Chunk: chunk},
			asynq.TaskID(id), asynq.Queue(workers.QueueFor(workers.PriorityHigh)), asynq.MaxRetry(50)); err != nil {
			return err
		}
	}
	return nil
}

// timeoutPerson moves a person on when nobody acknowledged their current
// try in time: the try's message is canceled if the provider does not have
// it yet, and the next channel is tried.
func (e *Engine) timeoutPerson(ctx context.Context, cfg *Config, person *Person) error {
	if cur := person.Current(); cur != nil {
		if _, err := e.cancelTry(ctx, cfg, person.Index, cur.MessageID, canceledTimedOut); err != nil {
			return err
		}
	}
	return e.advancePerson(ctx, cfg, person.Index, person.Step)
}

// What the history of a try's message says when it is canceled.
const (
	canceledTimedOut  = "canceled: no answer within the broadcast's ack timeout; the person's next channel is tried"
	canceledAnswered  = "canceled: the person answered the broadcast on another channel"
	canceledBroadcast = "canceled: the broadcast was canceled"
)

// cancelTry cancels a try's message unless the provider has it already,
// and records the cancellation in the person's tries; reached says the
// message could not be canceled because it is with a provider, or being
// handed to one, or already reached the person. A message not yet
// due has no ledger record: it gets one, canceled, so its send task finds
// it canceled whenever it runs. The task itself stays queued and ends at
// once: removing it from a long pending list would cost more.
func (e *Engine) cancelTry(ctx context.Context, cfg *Config, index int, messageID, reason string) (reached bool, err error) {
	err = e.Bulk.Ledger.Cancel(ctx, cfg.Tenant, messageID, reason)
	if errors.Is(err, ledger.ErrNotFound) {
		p, _, perr := e.Bulk.Store.Person(ctx, cfg.ID, index)
		if perr != nil {
			return false, ignoreNotFound(perr)
		}
		t := p.TryOf(messageID)
		if t == nil {
			return false, nil
		}
		req, rerr := e.tryRequest(ctx, cfg, p, t)
		if rerr != nil {
			var invalid *messaging.InvalidError
			if errors.As(rerr, &invalid) {
				// It could never be sent: nothing to cancel in the ledger.
				return false, e.Status(ctx, cfg.ID+":"+strconv.Itoa(index), messageID, ledger.StatusCanceled)
			}
			return false, rerr
		}
		if _, err := e.Bulk.Ledger.Create(ctx, messageID, req); err != nil {
			return false, err
		}
		err = e.Bulk.Ledger.Cancel(ctx, cfg.Tenant, messageID, reason)
	}
	var conflict *ledger.ConflictError
	switch {
	case errors.As(err, &conflict):
		// With the provider, or a worker is calling it now: it runs its
		// course, and its person follows its reports. A message that
		// ended before reaching anyone (failed, canceled) did not.
		endedUnreached := conflict.Reason == "final" && (failure(conflict.Status) || conflict.Status == ledger.StatusCanceled)
		return !endedUnreached, nil
	case errors.Is(err, ledger.ErrNotFound):
		return false, nil // expired
	case err != nil:
		return false, err
	}
	return false, e.Status(ctx, cfg.ID+":"+strconv.Itoa(index), messageID, ledger.StatusCanceled)
}

func ignoreNotFound(err error) error {
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// linked resolves a message's link to its broadcast's configuration and
// the person's index; ok is false when the link is not a broadcast's or
// the broadcast has expired.
func (e *Engine) linked(ctx context.Context, link string) (cfg *Config, index int, ok bool, err error) {
	id, index, ok := parseLink(link)
	if !ok {
		return nil, 0, false, nil
	}
	cfg, err = e.broadcastConfig(ctx, id)
	if errors.Is(err, ErrNotFound) {
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

// Status records a status of a broadcast's message: a message
// that ends without reaching the person moves them on to their next
// channel at once; a delivery acknowledges a broadcast without a poll.
func (e *Engine) Status(ctx context.Context, link, messageID string, st ledger.Status) error {
	cfg, index, ok, err := e.linked(ctx, link)
	if !ok || err != nil {
		return err
	}
	id := cfg.ID
	failed := false
	step := 0
	now := e.Now().UTC()
	_, err = e.Bulk.Store.Update(ctx, id, index, func(p *Person) (*Event, bool) {
		t := p.TryOf(messageID)
		if t == nil || ledger.Status(t.Status).Rank() > st.Rank() {
			return nil, false
		}
		current := p.Current().MessageID == messageID
		if t.Status == string(st) {
			// Told again (a provider's retry, a task run again after a
			// failure half-way): a failure whose person did not move on
			// yet moves them on now.
			if current && !p.Done() && failure(st) {
				failed, step = true, p.Step
			}
			return nil, false
		}
		t.Status = string(st)
		if t.ReachedAt == nil && (st == ledger.StatusSent || st == ledger.StatusDelivered) {
			t.ReachedAt = &now
		}
		if current && !p.Done() {
			switch {
			case st == ledger.StatusSent && (p.State == PersonQueued || p.State == PersonPending):
				p.State = PersonSent
			case st == ledger.StatusDelivered && cfg.Poll == nil:
				p.State, p.AcknowledgedAt = PersonAcknowledged, &now
			case st == ledger.StatusDelivered:
				p.State = PersonDelivered
			case failure(st):
				failed, step = true, p.Step
			}
		}
		return &Event{Channel: t.Channel, Status: t.Status}, true
	})
	if err != nil || !failed {
		return err
	}
	sum, err := e.Store.Get(ctx, "", id)
	switch {
	case err != nil:
		return err
	case sum.State == StateCanceled:
		// The message the cancel could not stop did not reach them:
		// nothing more is tried, and they count as canceled.
		_, err = e.Bulk.Store.Update(ctx, id, index, func(p *Person) (*Event, bool) {
			if p.Done() || p.Step != step || p.State == PersonSent || p.State == PersonDelivered {
				return nil, false
			}
			p.State = PersonCanceled
			return &Event{}, true
		})
		return err
	case sum.State != StateActive:
		return nil
	}
	return e.advancePerson(ctx, cfg, index, step)
}

// failure says whether a message's status means its channel did not reach
// the person, so the cascade moves on.
func failure(st ledger.Status) bool {
	return st == ledger.StatusFailed || st == ledger.StatusUndelivered || st == ledger.StatusSuppressed
}

// Answer records a person's answer on any channel: they are
// acknowledged, the poll is tallied by their latest answer, and a message
// still waiting on another channel is canceled.
func (e *Engine) Answer(ctx context.Context, link, messageID, channel, option, digits string, at time.Time) error {
	cfg, index, ok, err := e.linked(ctx, link)
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
	now := e.Now().UTC()
	if !at.IsZero() {
		now = at.UTC()
	}
	var pending []string
	_, err = e.Bulk.Store.Update(ctx, id, index, func(p *Person) (*Event, bool) {
		t := p.TryOf(messageID)
		if t == nil || (!at.IsZero() && at.Before(t.At)) {
			return nil, false // not an answer to this broadcast: it came before
		}
		changed := false
		if p.State != PersonAcknowledged && p.State != PersonCanceled {
			p.State, p.AcknowledgedAt, changed = PersonAcknowledged, &now, true
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
		return &Event{Channel: channel, At: now}, changed
	})
	if err != nil {
		return err
	}
	for _, m := range pending {
		if _, err := e.cancelTry(ctx, cfg, index, m, canceledAnswered); err != nil {
			return err
		}
	}
	return nil
}

// CancelPeople cancels what a canceled broadcast has not sent.
func (e *Engine) CancelPeople(ctx context.Context, id string) error {
	cfg, err := e.broadcastConfig(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	// People are canceled fanoutParallel at a time; their round trips go
	// together (Options.Bulk).
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fanoutParallel)
	err = e.Store.Scan(ctx, id, func(p *Person) error {
		if p.Done() {
			return nil
		}
		g.Go(func() error { return e.cancelPerson(gctx, cfg, p) })
		return gctx.Err()
	})
	return errors.Join(g.Wait(), err)
}

// cancelPerson cancels what still waits to be sent to a person. A person
// whose message a provider already has, or a worker is handing over now,
// is not canceled: they follow that message's reports (sent, delivered;
// a failure cancels them then, see Status), since they may well be
// reached. A try made while this ran (a failure moving the person to
// their next channel just before the cancel) is canceled too.
func (e *Engine) cancelPerson(ctx context.Context, cfg *Config, p *Person) error {
	handled := map[string]bool{}
	for range 3 {
		reached := false
		for _, t := range p.Tries {
			if handled[t.MessageID] || ledger.Status(t.Status).Rank() >= ledger.StatusSent.Rank() {
				continue
			}
			r, err := e.cancelTry(ctx, cfg, p.Index, t.MessageID, canceledBroadcast)
			if err != nil {
				return err
			}
			handled[t.MessageID], reached = true, reached || r
		}
		if reached {
			return nil
		}
		var newer *Person
		_, err := e.Bulk.Store.Update(ctx, cfg.ID, p.Index, func(fresh *Person) (*Event, bool) {
			if fresh.Done() || fresh.State == PersonSent || fresh.State == PersonDelivered {
				return nil, false
			}
			for _, t := range fresh.Tries {
				if !handled[t.MessageID] && ledger.Status(t.Status).Rank() < ledger.StatusSent.Rank() {
					newer = fresh
					return nil, false
				}
			}
			fresh.State = PersonCanceled
			return &Event{}, true
		})
		if err != nil || newer == nil {
			return err
		}
		p = newer
	}
	return fmt.Errorf("broadcast %s: person %d keeps getting new tries while being canceled", cfg.ID, p.Index)
}

// Preview estimates a broadcast without storing or sending anything: per
// channel, who gets it first, SMS segments and encoding by locale, the time
// to send at each sender's current rate and daily quota, and the cost. A
// bad request is a *messaging.InvalidError, as for Create.
func (e *Engine) Preview(ctx context.Context, tenant string, in *Request) (Estimate, error) {
	cfg, inline, err := e.validateBroadcast(ctx, tenant, in, e.Now().UTC())
	if err != nil {
		return Estimate{}, err
	}
	var recips []audiences.Recipient
	if inline != nil {
		recips = inline.Recipients
	} else {
		for i := range cfg.Chunks {
			chunk, err := e.Audiences.Chunk(ctx, tenant, cfg.AudienceID, i)
			if err != nil {
				return Estimate{}, err
			}
			var safe map[int]bool
			if cfg.OnlyNotSafe {
				// As the fan-out will: leave out those who answered safe.
				if safe, err = e.safeIn(ctx, cfg.FollowUpOf, i*audiences.ChunkSize, len(chunk)); err != nil {
					return Estimate{}, err
				}
			}
			for j, r := range chunk {
				if !safe[i*audiences.ChunkSize+j] {
					recips = append(recips, r)
				}
			}
		}
	}
	est := EstimateInput{Cascade: cfg.Channels, Texts: map[string]map[string]string{},
		Senders: map[string]SenderCapacity{}, Prices: e.Prices}
	locales := map[string]bool{}
	for _, r := range recips {
		er := EstimateRecipient{Locale: r.Locale}
		// Every channel the person has, in the cascade or not: those out of
		// it tell the preview which channel would reach the unreachable.
		for _, ch := range e.Channels.Names() {
			if addressFor(r, ch) != "" {
				er.Channels = append(er.Channels, ch)
			}
		}
		est.Recipients = append(est.Recipients, er)
		locales[r.Locale] = true
	}
	set, err := e.Messages.SettingsOf(ctx, tenant)
	if err != nil {
		return Estimate{}, err
	}
	var tpl *templates.Template
	if cfg.Template != "" {
		if tpl, err = e.Templates.Get(ctx, tenant, cfg.Template); err != nil {
			return Estimate{}, err
		}
	}
	for _, ch := range cfg.Channels {
		est.Texts[ch] = map[string]string{}
		for loc := range locales {
			if tpl == nil {
				est.Texts[ch][loc] = pickText(cfg.Body, loc)
				continue
			}
			if r, err := tpl.Render(e.TemplateChain, ch, loc, cfg.Vars, set.AllowPHI); err == nil {
				text := r.Body
				if r.Voice != nil {
					text = r.Voice.Text
				}
				est.Texts[ch][loc] = text
			}
		}
	}
	if e.Senders != nil {
		st, err := e.Senders.Status(ctx)
		if err != nil {
			return Estimate{}, err
		}
		for _, x := range st {
			est.Senders[x.Channel] = SenderCapacity{PerSecond: x.EffectivePerSecond, PerDay: x.PerDay, UsedToday: x.UsedToday}
		}
	}
	return EstimateBroadcast(est), nil
}
