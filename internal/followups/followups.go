// Package followups keeps follow-up plans: a series of messages to one
// patient at offsets from an anchor (the discharge, the appointment), each
// step a message of the ledger, which a clinic can cancel and which stops by
// itself when the patient opts out or sends an urgent reply.
//
// A plan is stored as one Redis hash, gw:fu:{<id>}, so every script touches
// one key (one Redis Cluster slot). Two indexes are kept beside it as their
// own keys and are only hints, checked against the plan when read: the
// tenant's plans, newest first (gw:fu:t:{<tenant>}), and the active plans of
// each recipient identity across tenants (gw:fu:i:{<hash>}), whose names
// carry a hash of the identity, never the phone number or address itself.
//
// Stopping a plan claims it first (a compare-and-set on the plan's hash
// with a lease), so two stoppers at once never cancel the same message
// twice; a stopper that dies holding the claim is replaced once the lease
// runs out.
package followups

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/consent"
)

// Step states.
const (
	StepScheduled = "scheduled" // its message is created and waits for its time
	StepSkipped   = "skipped"   // it was past due when the plan was created (past_due skip)
	StepSentNow   = "sent_now"  // it was past due and sent at once (past_due send_now)
	StepCanceled  = "canceled"  // the plan was canceled before it was sent
	StepStopped   = "stopped"   // a stop_on condition stopped the plan before it was sent
	// StepFailed: its questionnaire could not be started when it was due
	// (Detail says why).
	StepFailed = "failed"
)

// Plan states.
const (
	PlanActive    = "active"    // steps remain to be sent
	PlanCompleted = "completed" // nothing was left to schedule
	PlanCanceled  = "canceled"  // canceled through the API
	PlanStopped   = "stopped"   // stopped by a stop_on condition
)

// What to do with a step whose time has passed when the plan is created.
const (
	PastDueSkip    = "skip"
	PastDueSendNow = "send_now"
)

// Stop conditions.
const (
	StopOnOptOut      = "opt_out"      // the patient opts out
	StopOnUrgentReply = "reply:urgent" // the patient sends an urgent reply
	StopOnAnyReply    = "reply:any"    // the patient replies at all
)

// DetailAlreadySent is the Detail of a step whose message had already gone
// out when its plan was stopped.
const DetailAlreadySent = "already sent"

// MaxSteps is the most steps a plan may have (the API's limit too).
const MaxSteps = 50

// DefaultRetention is how long a plan is kept after its last step is due
// when NewStore is given no retention.
const DefaultRetention = 30 * 24 * time.Hour

var (
	// ErrNotFound: no such plan for the tenant (never created, another
	// tenant's, or expired).
	ErrNotFound = errors.New("follow-up plan not found")
	// ErrNotActive: the plan is no longer active (already completed,
	// canceled or stopped), or another caller is stopping it right now.
	ErrNotActive = errors.New("follow-up plan is not active")
	// ErrAlreadySent is what a cancel function returns (wrapped or not)
	// for a message that went out already and can no longer be canceled.
	ErrAlreadySent = errors.New("message already sent")
	// ErrExists: Create was given the id of an existing plan.
	ErrExists = errors.New("follow-up plan already exists")
)

// Step is one message of a plan, or a questionnaire it starts.
type Step struct {
	// Index is the step's position in the plan, from 0 (set by Create).
	Index int `json:"index"`
	// Offset is the ISO 8601 duration from the anchor ("P1D").
	Offset string `json:"offset"`
	// At is the local time of day the step is sent at ("10:00"), if any.
	At       string `json:"at,omitempty"`
	Channel  string `json:"channel"`
	Template string `json:"template"`
	// Questionnaire names the questionnaire the step starts instead of
	// sending a message of its own ("" for a message step).
	Questionnaire string `json:"questionnaire,omitempty"`
	// Locale is the language a questionnaire step asks in.
	Locale string `json:"locale,omitempty"`
	// DueAt is when the step is due.
	DueAt time.Time `json:"due_at"`
	// StartAt is when a questionnaire step's timer starts it: DueAt, or
	// the end of quiet hours, with Deferred saying so.
	StartAt  time.Time `json:"start_at,omitzero"`
	Deferred string    `json:"deferred,omitempty"`
	// StartedAt is when the timer took a questionnaire step up to start
	// it: from then on stopping the plan leaves it to run its course.
	StartedAt *time.Time `json:"started_at,omitempty"`
	// ResponseID is the questionnaire response a questionnaire step started.
	ResponseID string `json:"response_id,omitempty"`
	// MessageID is the ledger message of the step ("" when skipped); for
	// a questionnaire step, its first question once started.
	MessageID string `json:"message_id,omitempty"`
	// State is one of StepScheduled … StepStopped.
	State string `json:"state"`
	// Detail explains the state: why a step was skipped, why it was
	// canceled, DetailAlreadySent.
	Detail string `json:"detail,omitempty"`
}

// Plan is a follow-up plan.
type Plan struct {
	ID        string `json:"id"`
	Tenant    string `json:"tenant"`
	ContactID string `json:"contact_id,omitempty"`
	// Identities are the recipient's addresses: a stop condition met by any
	// of them stops the plan.
	Identities []consent.Identity `json:"identities"`
	Anchor     time.Time          `json:"anchor"`
	// TimeZone is the IANA zone the steps' local times were computed in.
	TimeZone string `json:"timezone"`
	// StopOn lists the conditions that stop the plan (StopOnOptOut …).
	StopOn []string `json:"stop_on,omitempty"`
	// PastDue is PastDueSkip or PastDueSendNow.
	PastDue string `json:"past_due,omitempty"`
	// State is one of PlanActive … PlanStopped.
	State string `json:"state"`
	// StopReason says why a plan was canceled or stopped.
	StopReason string    `json:"stop_reason,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	Steps      []Step    `json:"steps"`
}

// NewID returns a new plan id: "fu_" and a ULID, so ids sort by creation
// time.
func NewID() string { return "fu_" + ulid.Make().String() }

// validID accepts ids made by NewID (canonical, upper-case ULIDs) only, so a
// caller's text never reaches a key name unchecked.
func validID(id string) bool {
	rest, ok := strings.CutPrefix(id, "fu_")
	if !ok {
		return false
	}
	u, err := ulid.ParseStrict(rest)
	return err == nil && u.String() == rest
}

// ValidStopOn reports whether s is a stop condition: "opt_out",
// "reply:urgent" or "reply:any".
func ValidStopOn(s string) bool {
	return s == StopOnOptOut || s == StopOnUrgentReply || s == StopOnAnyReply
}

// stopsOn reports whether a plan stopping on conditions stops on condition.
// An urgent reply is a reply: a plan stopping on any reply stops on it too.
func stopsOn(conditions []string, condition string) bool {
	for _, c := range conditions {
		if c == condition || (condition == StopOnUrgentReply && c == StopOnAnyReply) {
			return true
		}
	}
	return false
}

func validStepState(s string) bool {
	switch s {
	case StepScheduled, StepSkipped, StepSentNow, StepCanceled, StepStopped, StepFailed:
		return true
	}
	return false
}

func validPlanState(s string) bool {
	switch s {
	case PlanActive, PlanCompleted, PlanCanceled, PlanStopped:
		return true
	}
	return false
}

// Store keeps plans in Redis.
type Store struct {
	rdb       redis.UniversalClient
	retention time.Duration
	// lease is how long a stopper's claim on a plan holds.
	lease time.Duration
	now   func() time.Time
}

// NewStore returns a store keeping each plan until retention after its last
// step is due (DefaultRetention when retention is not positive).
func NewStore(rdb redis.UniversalClient, retention time.Duration) *Store {
	if retention <= 0 {
		retention = DefaultRetention
	}
	return &Store{rdb: rdb, retention: retention, lease: time.Minute, now: time.Now}
}

func planKey(id string) string       { return "gw:fu:{" + id + "}" }
func tenantKey(tenant string) string { return "gw:fu:t:{" + tenant + "}" }
func identityKey(id consent.Identity) string {
	sum := sha256.Sum256([]byte(consent.Normalise(id).String()))
	return "gw:fu:i:{" + hex.EncodeToString(sum[:16]) + "}"
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// createScript stores a new plan. KEYS plan ARGV tenant, state, plan_json,
// expire_at_ms. Returns 0 when the plan exists.
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'tenant', ARGV[1], 'state', ARGV[2], 'plan', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1
`)

// indexScript adds a member to an index and makes the index live at least
// until the member's plan expires. KEYS index ARGV member, score,
// expire_at_ms, now_ms
var indexScript = redis.NewScript(`
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 or tonumber(ARGV[4]) + ttl < tonumber(ARGV[3]) then
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
end
return 1
`)

// claimScript claims an active plan of the tenant for a stopper. KEYS plan
// ARGV tenant, token, now_ms, lease_ms. Returns {"ok", plan_json},
// {"missing"}, {"inactive", state} or {"busy"} (another stopper holds an
// unexpired claim).
var claimScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'tenant', 'state', 'plan', 'claim_until')
if not h[1] or h[1] ~= ARGV[1] or not h[3] then return {'missing'} end
if h[2] ~= 'active' then return {'inactive', h[2]} end
if h[4] and tonumber(h[4]) > tonumber(ARGV[3]) then return {'busy'} end
redis.call('HSET', KEYS[1], 'claim', ARGV[2], 'claim_until', tonumber(ARGV[3]) + tonumber(ARGV[4]))
return {'ok', h[3]}
`)

// saveScript writes a claimed plan and releases the claim. KEYS plan ARGV
// token, state, plan_json. Returns 0 when the claim is no longer the
// caller's (its lease ran out and another stopper took over, or the plan
// expired).
var saveScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'plan', ARGV[3])
redis.call('HDEL', KEYS[1], 'claim', 'claim_until')
return 1
`)

// updateScript replaces a plan's JSON if it is still the one the caller
// read and no stopper holds an unexpired claim; an expired claim is
// dropped, so that stopper's late save is refused. KEYS plan ARGV tenant,
// old_json, new_json, now_ms. Returns "ok", "missing", "changed" or
// "busy".
var updateScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'tenant', 'plan', 'claim_until')
if not h[1] or h[1] ~= ARGV[1] or not h[2] then return 'missing' end
if h[2] ~= ARGV[2] then return 'changed' end
if h[3] then
  if tonumber(h[3]) > tonumber(ARGV[4]) then return 'busy' end
  redis.call('HDEL', KEYS[1], 'claim', 'claim_until')
end
redis.call('HSET', KEYS[1], 'plan', ARGV[3])
return 'ok'
`)

// errBusy: a stopper holds the plan's claim right now.
var errBusy = errors.New("followups: the plan is being stopped")

// update changes a plan of the tenant's steps with change, which reports
// whether it changed anything, and writes it back unless the plan changed
// meanwhile (then change runs again on the new plan). It never changes
// the plan's state: it is how a step's timer records its progress, beside
// the stoppers. It returns the plan as written (or as found, when change
// changed nothing); ErrNotFound, errBusy while a stopper holds the plan.
func (s *Store) update(ctx context.Context, tenant, id string, change func(p *Plan) (bool, error)) (*Plan, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	for range 20 {
		v, err := s.rdb.HMGet(ctx, planKey(id), "tenant", "plan").Result()
		if err != nil {
			return nil, fmt.Errorf("followups: %w", err)
		}
		p, err := decode(v, tenant)
		if err != nil {
			return nil, err
		}
		changed, err := change(p)
		if err != nil || !changed {
			return p, err
		}
		p.UpdatedAt = s.now().UTC()
		raw, err := json.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("followups: %w", err)
		}
		res, err := updateScript.Run(ctx, s.rdb, []string{planKey(id)}, tenant, v[1], raw, ms(s.now())).Text()
		if err != nil {
			return nil, fmt.Errorf("followups: %w", err)
		}
		switch res {
		case "ok":
			return p, nil
		case "missing":
			return nil, ErrNotFound
		case "busy":
			return nil, errBusy
		}
		// changed: read it again
	}
	return nil, fmt.Errorf("followups: plan %s kept changing while a step was recorded", id)
}

// Create stores a new plan and indexes it by tenant and, while it is
// active, by each of its identities. It completes the plan in place: a new
// id when ID is empty, State PlanActive when empty (PlanCompleted when no
// step is scheduled: nothing is left to stop), CreatedAt and UpdatedAt,
// each step's Index, and identities normalised as the consent ledger does.
// The plan expires retention after its last step is due (or after now, if
// that is later). A plan id that exists already gives ErrExists.
func (s *Store) Create(ctx context.Context, p *Plan) error {
	now := s.now().UTC()
	if p.ID == "" {
		p.ID = NewID()
	}
	if err := s.complete(p, now); err != nil {
		return err
	}
	last := now
	for _, st := range p.Steps {
		if st.DueAt.After(last) {
			last = st.DueAt
		}
	}
	expireAt := last.Add(s.retention)
	raw, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("followups: %w", err)
	}
	// The indexes first: an index entry whose plan was never written is
	// dropped when read, while a plan missing from its indexes could not
	// be listed or stopped by its identities.
	if err := indexScript.Run(ctx, s.rdb, []string{tenantKey(p.Tenant)}, p.ID, ms(p.CreatedAt), ms(expireAt), ms(now)).Err(); err != nil {
		return fmt.Errorf("followups: tenant index: %w", err)
	}
	if p.State == PlanActive {
		for _, id := range p.Identities {
			if err := indexScript.Run(ctx, s.rdb, []string{identityKey(id)}, p.ID, ms(expireAt), ms(expireAt), ms(now)).Err(); err != nil {
				return fmt.Errorf("followups: identity index: %w", err)
			}
		}
	}
	ok, err := createScript.Run(ctx, s.rdb, []string{planKey(p.ID)}, p.Tenant, p.State, raw, ms(expireAt)).Int()
	if err != nil {
		return fmt.Errorf("followups: %w", err)
	}
	if ok == 0 {
		return fmt.Errorf("followups: plan %s: %w", p.ID, ErrExists)
	}
	return nil
}

// complete checks a new plan and fills in its defaults.
func (s *Store) complete(p *Plan, now time.Time) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("followups: invalid plan: "+format, args...)
	}
	switch {
	case !validID(p.ID):
		return bad("id %q is not a plan id", p.ID)
	case p.Tenant == "":
		return bad("no tenant")
	case len(p.Steps) == 0:
		return bad("no steps")
	case len(p.Steps) > MaxSteps:
		return bad("%d steps, at most %d", len(p.Steps), MaxSteps)
	case p.PastDue != "" && p.PastDue != PastDueSkip && p.PastDue != PastDueSendNow:
		return bad("past_due %q: want %q or %q", p.PastDue, PastDueSkip, PastDueSendNow)
	case p.State != "" && !validPlanState(p.State):
		return bad("state %q", p.State)
	}
	for _, c := range p.StopOn {
		if !ValidStopOn(c) {
			return bad("stop_on %q: want %q, %q or %q", c, StopOnOptOut, StopOnUrgentReply, StopOnAnyReply)
		}
	}
	for i, id := range p.Identities {
		if !id.Valid() {
			return bad("identity of kind %q", id.Kind)
		}
		p.Identities[i] = consent.Normalise(id)
	}
	scheduled := false
	for i := range p.Steps {
		st := &p.Steps[i]
		st.Index = i
		if !validStepState(st.State) {
			return bad("step %d: state %q", i, st.State)
		}
		if st.State == StepScheduled {
			if st.MessageID == "" && st.Questionnaire == "" {
				return bad("step %d: scheduled without a message or a questionnaire", i)
			}
			scheduled = true
		}
	}
	if p.State == "" {
		p.State = PlanActive
	}
	if p.State == PlanActive && !scheduled {
		p.State = PlanCompleted
	}
	if p.CreatedAt.IsZero() {
		p.CreatedAt = now
	}
	if p.UpdatedAt.IsZero() {
		p.UpdatedAt = p.CreatedAt
	}
	return nil
}

// Get returns the tenant's plan: ErrNotFound when there is none (another
// tenant's plan is not found either).
func (s *Store) Get(ctx context.Context, tenant, id string) (*Plan, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	v, err := s.rdb.HMGet(ctx, planKey(id), "tenant", "plan").Result()
	if err != nil {
		return nil, fmt.Errorf("followups: %w", err)
	}
	return decode(v, tenant)
}

// decode reads the tenant and plan fields of a plan hash.
func decode(v []any, tenant string) (*Plan, error) {
	owner, _ := v[0].(string)
	raw, _ := v[1].(string)
	if owner == "" || owner != tenant || raw == "" {
		return nil, ErrNotFound
	}
	var p Plan
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return nil, fmt.Errorf("followups: stored plan: %w", err)
	}
	return &p, nil
}

// MaxList is the most plans List returns at once.
const MaxList = 500

// List returns the tenant's latest plans, newest first: at most limit (50
// when limit is not positive, MaxList at most).
func (s *Store) List(ctx context.Context, tenant string, limit int) ([]*Plan, error) {
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, MaxList)
	key := tenantKey(tenant)
	var out []*Plan
	var gone []any
	for offset := int64(0); len(out) < limit; {
		ids, err := s.rdb.ZRevRange(ctx, key, offset, offset+int64(limit)-1).Result()
		if err != nil {
			return nil, fmt.Errorf("followups: %w", err)
		}
		if len(ids) == 0 {
			break
		}
		offset += int64(len(ids))
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.SliceCmd, len(ids))
		for i, id := range ids {
			cmds[i] = pipe.HMGet(ctx, planKey(id), "tenant", "plan")
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("followups: %w", err)
		}
		for i, cmd := range cmds {
			p, err := decode(cmd.Val(), tenant)
			if errors.Is(err, ErrNotFound) {
				gone = append(gone, ids[i]) // expired
				continue
			} else if err != nil {
				return nil, err
			}
			if len(out) < limit {
				out = append(out, p)
			}
		}
	}
	if len(gone) > 0 {
		// Expired plans leave the index; a failure here only delays that.
		_ = s.rdb.ZRem(ctx, key, gone...).Err()
	}
	return out, nil
}

// Stop ends an active plan of the tenant. Each step still scheduled (and
// not known to be sent) has its message canceled with cancel(ctx, tenant,
// messageID, reason):
//
//   - when cancel returns nil the step takes the state (StepCanceled for
//     PlanCanceled, StepStopped for PlanStopped) and the reason as Detail;
//   - when it returns an error wrapping ErrAlreadySent the step keeps its
//     state, with Detail DetailAlreadySent;
//   - any other error is taken as transient: the step keeps its state with
//     the error as Detail, the other steps are processed, and the plan stays
//     active so that stopping it again retries (Stop returns an error). A
//     cancel function should therefore report a message that needs no
//     canceling any more (already canceled, expired) as nil or
//     ErrAlreadySent.
//
// A questionnaire step not started yet takes the state as well; one whose
// timer has taken it up (StartedAt) keeps its state, with Detail
// DetailAlreadySent: the questionnaire runs its own course.
//
// The plan takes the state, PlanCanceled (API cancel) or PlanStopped (a
// stop_on condition), and reason as StopReason, and leaves its identities'
// indexes. Stop returns the updated plan; ErrNotFound when the tenant has no
// such plan; ErrNotActive when the plan is not active or another caller is
// stopping it at the same time (each step is processed once).
func (s *Store) Stop(ctx context.Context, tenant, id, state, reason string, cancel func(ctx context.Context, tenant, messageID, reason string) error) (*Plan, error) {
	var stepState string
	switch state {
	case PlanCanceled:
		stepState = StepCanceled
	case PlanStopped:
		stepState = StepStopped
	default:
		return nil, fmt.Errorf("followups: a plan is stopped as %q or %q, not %q", PlanCanceled, PlanStopped, state)
	}
	if cancel == nil {
		return nil, errors.New("followups: Stop needs a cancel function")
	}
	if !validID(id) {
		return nil, ErrNotFound
	}
	token := rand.Text()
	res, err := claimScript.Run(ctx, s.rdb, []string{planKey(id)}, tenant, token, ms(s.now()), s.lease.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("followups: %w", err)
	}
	switch res[0] {
	case "missing":
		return nil, ErrNotFound
	case "inactive":
		return nil, fmt.Errorf("followups: plan %s is %s: %w", id, res[1], ErrNotActive)
	case "busy":
		return nil, fmt.Errorf("followups: plan %s is being stopped: %w", id, ErrNotActive)
	}
	var p Plan
	if err := json.Unmarshal([]byte(res[1]), &p); err != nil {
		return nil, fmt.Errorf("followups: stored plan: %w", err)
	}

	detail := reason
	if detail == "" {
		detail = "plan " + state
	}
	var failed []error
	for i := range p.Steps {
		st := &p.Steps[i]
		if st.State != StepScheduled || st.Detail == DetailAlreadySent {
			continue
		}
		if st.Questionnaire != "" && st.StartedAt != nil {
			// Its timer has started the questionnaire (or is starting
			// it): the questionnaire runs its own course from there.
			st.Detail = DetailAlreadySent
			continue
		}
		if st.MessageID != "" && st.Questionnaire == "" {
			err := cancel(ctx, tenant, st.MessageID, reason)
			if errors.Is(err, ErrAlreadySent) {
				st.Detail = DetailAlreadySent
				continue
			}
			if err != nil {
				st.Detail = "cancel failed: " + err.Error()
				failed = append(failed, fmt.Errorf("step %d (message %s): %w", st.Index, st.MessageID, err))
				continue
			}
		}
		st.State, st.Detail = stepState, detail
	}
	p.UpdatedAt = s.now().UTC()
	if len(failed) == 0 {
		p.State, p.StopReason = state, reason
	}
	raw, err := json.Marshal(&p)
	if err != nil {
		return nil, fmt.Errorf("followups: %w", err)
	}
	// The outcome is written even when the caller's context ended during
	// the cancels: the messages are canceled already.
	wctx, done := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer done()
	saved, err := saveScript.Run(wctx, s.rdb, []string{planKey(id)}, token, p.State, raw).Int()
	if err != nil {
		return nil, fmt.Errorf("followups: plan %s: saving the stop: %w", id, err)
	}
	if saved == 0 {
		return nil, fmt.Errorf("followups: plan %s: the claim ran out before the stop was saved: %w", id, ErrNotActive)
	}
	if len(failed) > 0 {
		return nil, fmt.Errorf("followups: plan %s stays active, stop it again to retry: %w", id, errors.Join(failed...))
	}
	for _, ident := range p.Identities {
		// A stale entry is harmless (StopFor skips plans no longer active)
		// and expires with the index.
		_ = s.rdb.ZRem(wctx, identityKey(ident), id).Err()
	}
	return &p, nil
}

// StopFor stops, with state PlanStopped and reason, every active plan of the
// identity, in any tenant, that stops on condition (StopOnOptOut,
// StopOnUrgentReply or StopOnAnyReply; a plan stopping on any reply also
// stops on an urgent one). It returns how many plans it stopped; plans
// stopped by someone else meanwhile are not counted. Errors of some plans do
// not keep the others from stopping; they are returned joined.
func (s *Store) StopFor(ctx context.Context, id consent.Identity, condition, reason string, cancel func(ctx context.Context, tenant, messageID, reason string) error) (int, error) {
	if !ValidStopOn(condition) {
		return 0, fmt.Errorf("followups: unknown stop condition %q", condition)
	}
	if !id.Valid() {
		return 0, fmt.Errorf("followups: invalid identity kind %q", id.Kind)
	}
	key := identityKey(id)
	if err := s.rdb.ZRemRangeByScore(ctx, key, "-inf", "("+ms(s.now())).Err(); err != nil {
		return 0, fmt.Errorf("followups: %w", err)
	}
	ids, err := s.rdb.ZRange(ctx, key, 0, -1).Result()
	if err != nil {
		return 0, fmt.Errorf("followups: %w", err)
	}
	stopped := 0
	var errs []error
	for _, pid := range ids {
		v, err := s.rdb.HMGet(ctx, planKey(pid), "tenant", "state", "plan").Result()
		if err != nil {
			errs = append(errs, fmt.Errorf("followups: plan %s: %w", pid, err))
			continue
		}
		tenant, _ := v[0].(string)
		state, _ := v[1].(string)
		if tenant == "" || state != PlanActive {
			_ = s.rdb.ZRem(ctx, key, pid).Err() // expired or ended
			continue
		}
		p, err := decode([]any{v[0], v[2]}, tenant)
		if err != nil {
			errs = append(errs, fmt.Errorf("followups: plan %s: %w", pid, err))
			continue
		}
		if !stopsOn(p.StopOn, condition) {
			continue
		}
		_, err = s.Stop(ctx, tenant, pid, PlanStopped, reason, cancel)
		switch {
		case err == nil:
			stopped++
		case errors.Is(err, ErrNotActive), errors.Is(err, ErrNotFound):
			// stopped or expired meanwhile
		default:
			errs = append(errs, err)
		}
	}
	return stopped, errors.Join(errs...)
}

// ActiveFor returns the tenant's active plans to any of the identities,
// newest first, each once.
func (s *Store) ActiveFor(ctx context.Context, tenant string, ids []consent.Identity) ([]*Plan, error) {
	seen := map[string]bool{}
	var out []*Plan
	for _, id := range ids {
		if !id.Valid() {
			continue
		}
		pids, err := s.rdb.ZRange(ctx, identityKey(id), 0, -1).Result()
		if err != nil {
			return nil, fmt.Errorf("followups: %w", err)
		}
		for _, pid := range pids {
			if seen[pid] {
				continue
			}
			seen[pid] = true
			v, err := s.rdb.HMGet(ctx, planKey(pid), "tenant", "state", "plan").Result()
			if err != nil {
				return nil, fmt.Errorf("followups: %w", err)
			}
			if state, _ := v[1].(string); state != PlanActive {
				continue
			}
			p, err := decode([]any{v[0], v[2]}, tenant)
			if errors.Is(err, ErrNotFound) {
				continue // another tenant's, or expired
			} else if err != nil {
				return nil, err
			}
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *Plan) int { return strings.Compare(b.ID, a.ID) })
	return out, nil
}
