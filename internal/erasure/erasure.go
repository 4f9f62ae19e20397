// Package erasure erases a patient's data from a tenant on request: the
// messages to them, their replies and conversations, questionnaire
// responses, recordings, audiences and broadcast people, follow-up plans,
// possible opt-outs, clinic events still waiting or dead-lettered, and the
// contact. Each store erases its own keys (an Erase function of its
// package); this package runs them in order, after canceling what was
// still to be sent, and leaves a tombstone: the hashed identities, when,
// and who asked.
//
// An erasure runs as a worker task and records its progress in Redis (the
// steps done, the ledger's cursor), so one interrupted half-way finishes
// when it runs again; every step may run twice. While it runs, its record
// holds the identities to erase (it must, to resume); once it completes,
// only their hashes are kept.
//
// Consent is kept, under the hashed identity only (see consent.Ledger.Erase):
// an opt-out given before the erasure is still honoured after it.
//
// Keys (a tenant's share its hash tag):
//
//	gw:erasure:{tenant}:<id>       hash: doc (the Erasure, JSON), job (the identities, while running), cursor
//	gw:erasure:{tenant}:<id>:refs  set: ids of the patient's messages, replies and responses (while running)
package erasure

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/audiences"
	"github.com/patientmsg/gateway/internal/broadcasts"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/followups"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/questionnaires"
	"github.com/patientmsg/gateway/internal/recordings"
	"github.com/patientmsg/gateway/internal/replies"
	"github.com/patientmsg/gateway/internal/webhooks"
	"github.com/patientmsg/gateway/workers"
)

// Errors.
var (
	ErrNotFound    = errors.New("erasure not found")
	ErrNoIdentity  = errors.New("an erasure needs a contact or an identity")
	ErrBadIdentity = errors.New("an identity to erase is not valid")
)

// States of an erasure.
const (
	StateInProgress = "in_progress"
	StateCompleted  = "completed"
)

// Steps, in the order they run. Plans and questionnaires end first, so
// nothing more is made for the patient; the messages' step cancels those
// still waiting before it scrubs them.
const (
	StepPlans          = "followup_plans"
	StepQuestionnaires = "questionnaire_responses"
	StepMessages       = "messages"
	StepArchive        = "archived_messages"
	StepReplies        = "replies"
	StepConsent        = "consent"
	StepAudiences      = "audiences"
	StepBroadcasts     = "broadcasts"
	StepWebhooks       = "webhook_dead_letters"
	StepTasks          = "queued_tasks"
	StepContact        = "contact"
)

var steps = []string{StepPlans, StepQuestionnaires, StepMessages, StepArchive, StepReplies, StepConsent, StepAudiences,
	StepBroadcasts, StepWebhooks, StepTasks, StepContact}

// Reason is what a canceled message's history says.
const Reason = "canceled: the patient's data was erased"

// Request is what to erase: a contact (all its identities) and/or
// identities, and who asked ("apikey:<fingerprint>", "user:<id>").
type Request struct {
	ContactID  string
	Identities []consent.Identity
	Actor      string
}

// Erasure is an erasure as the API shows it; once completed, it is the
// tombstone: the hashed identities and contact, when, who asked, and how
// much was erased in each store.
type Erasure struct {
	ID     string `json:"id"`
	Tenant string `json:"-"`
	State  string `json:"state"`
	// Identities are "kind:hash" (Hash), never the addresses.
	Identities  []string   `json:"identities"`
	ContactHash string     `json:"contact_hash,omitempty"`
	RequestedBy string     `json:"requested_by"`
	RequestedAt time.Time  `json:"requested_at"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	// Done lists the steps done; Erased counts what each erased.
	Done   []string       `json:"steps_done"`
	Erased map[string]int `json:"erased"`
}

// job is what a running erasure needs to resume: the identities in clear.
type job struct {
	ContactID  string             `json:"contact,omitempty"`
	Identities []consent.Identity `json:"identities"`
}

// Hash is the tombstone's form of an identity: its kind and the hash the
// consent ledger keys it by. It proves which address was erased to whoever
// has the address; it does not hide an address from whoever tries them all.
func Hash(id consent.Identity) string {
	sum := sha256.Sum256([]byte(id.String()))
	return string(id.Kind) + ":" + hex.EncodeToString(sum[:16])
}

func hashText(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// Enqueuer queues tasks (an *asynq.Client).
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Service starts and runs erasures. Stores left nil are skipped (a
// gateway without voice has no recordings).
type Service struct {
	Redis      redis.UniversalClient
	Queue      Enqueuer
	Contacts   *contacts.Store
	Ledger     *ledger.Ledger
	Messages   *messaging.Service
	Recordings *recordings.Store
	// Archive holds the messages moved out of Redis (nil: none).
	Archive        Archive
	Replies        *replies.Store
	Consent        *consent.Ledger
	Questionnaires *questionnaires.Service
	Followups      *followups.Store
	Plans          *followups.Planner
	Audiences      *audiences.Store
	Broadcasts     *broadcasts.Store
	Webhooks       *webhooks.Store
	Tasks          workers.TaskLister
	// OnErased, when set, is told of each completed erasure: the hook the
	// audit log records it by (actor, tenant, "patient.erase", the erasure).
	OnErased func(ctx context.Context, e *Erasure)
	Logger   *slog.Logger
	Now      func() time.Time
}

// Archive is where messages moved out of Redis are (internal/archive).
type Archive interface {
	Erase(ctx context.Context, tenant string, match func(*ledger.Message) bool, before func(*ledger.Message) error) (int, error)
}

func key(tenant, id string) string     { return "gw:erasure:{" + tenant + "}:" + id }
func refsKey(tenant, id string) string { return key(tenant, id) + ":refs" }

func (s *Service) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

func (s *Service) log() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

// NewID returns an erasure id: "er_" and a ULID.
func NewID() string { return "er_" + ulid.Make().String() }

func validID(id string) bool {
	rest, ok := strings.CutPrefix(id, "er_")
	u, err := ulid.ParseStrict(rest)
	return ok && err == nil && u.String() == rest
}

// Start records an erasure of the tenant and queues its task. With a
// contact, the contact's identities are erased with those given;
// contacts.ErrNotFound when the tenant has no such contact. With an
// identity that belongs to a contact, that contact is erased whole.
func (s *Service) Start(ctx context.Context, tenant string, r Request) (*Erasure, error) {
	j := job{ContactID: r.ContactID}
	for _, id := range r.Identities {
		if !id.Valid() {
			return nil, ErrBadIdentity
		}
		j.Identities = appendIdentity(j.Identities, id)
	}
	if r.ContactID != "" {
		ct, err := s.Contacts.Get(ctx, tenant, r.ContactID)
		if err != nil {
			return nil, err
		}
		for _, id := range ct.Identities {
			j.Identities = appendIdentity(j.Identities, id)
		}
	} else {
		for _, id := range j.Identities {
			ct, err := s.Contacts.Find(ctx, tenant, id)
			if errors.Is(err, contacts.ErrNotFound) {
				continue
			} else if err != nil {
				return nil, err
			}
			if !strings.HasPrefix(ct.ID, "auto-") {
				j.ContactID = ct.ID
			}
			for _, i := range ct.Identities {
				j.Identities = appendIdentity(j.Identities, i)
			}
			break
		}
	}
	if len(j.Identities) == 0 && j.ContactID == "" {
		return nil, ErrNoIdentity
	}
	e := &Erasure{ID: NewID(), Tenant: tenant, State: StateInProgress, RequestedBy: r.Actor,
		RequestedAt: s.now().UTC(), Done: []string{}, Erased: map[string]int{}}
	for _, id := range j.Identities {
		e.Identities = append(e.Identities, Hash(id))
	}
	if j.ContactID != "" {
		e.ContactHash = hashText(j.ContactID)
	}
	doc, _ := json.Marshal(e)
	jb, _ := json.Marshal(j)
	if err := s.Redis.HSet(ctx, key(tenant, e.ID), "doc", doc, "job", jb).Err(); err != nil {
		return nil, err
	}
	t, err := workers.NewErasureTask(workers.ErasureRun{Tenant: tenant, ID: e.ID})
	if err != nil {
		return nil, err
	}
	if _, err := s.Queue.EnqueueContext(ctx, t); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil, fmt.Errorf("erasure not queued: %w", err)
	}
	s.log().Info("erasure requested", "tenant", tenant, "erasure_id", e.ID, "identities", len(j.Identities))
	return e, nil
}

// appendIdentity adds id, normalised, unless it is there already.
func appendIdentity(ids []consent.Identity, id consent.Identity) []consent.Identity {
	id = consent.Normalise(id)
	if slices.Contains(ids, id) {
		return ids
	}
	return append(ids, id)
}

// Get returns a tenant's erasure.
func (s *Service) Get(ctx context.Context, tenant, id string) (*Erasure, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	raw, err := s.Redis.HGet(ctx, key(tenant, id), "doc").Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	e := &Erasure{Tenant: tenant}
	if err := json.Unmarshal([]byte(raw), e); err != nil {
		return nil, err
	}
	return e, nil
}

// Run runs an erasure, or resumes it: the steps done are skipped, the
// ledger's scan goes on from its cursor. An erasure completed already is
// left as it is.
func (s *Service) Run(ctx context.Context, p workers.ErasureRun) error {
	e, err := s.Get(ctx, p.Tenant, p.ID)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("erasure %s: %w", p.ID, asynq.SkipRetry)
	}
	if err != nil {
		return err
	}
	if e.State == StateCompleted {
		return nil
	}
	raw, err := s.Redis.HGet(ctx, key(p.Tenant, p.ID), "job").Result()
	if err != nil {
		return err
	}
	var j job
	if err := json.Unmarshal([]byte(raw), &j); err != nil {
		return fmt.Errorf("erasure %s: its job is corrupt: %w", p.ID, asynq.SkipRetry)
	}
	log := s.log().With("tenant", p.Tenant, "erasure_id", p.ID)
	for _, step := range steps {
		if slices.Contains(e.Done, step) {
			continue
		}
		n, err := s.step(ctx, e, j, step)
		if err != nil {
			log.Warn("erasure step failed; it will run again", "step", step, "err", err)
			return fmt.Errorf("erasure step %s: %w", step, err)
		}
		e.Done = append(e.Done, step)
		e.Erased[step] += n
		if err := s.save(ctx, e); err != nil {
			return err
		}
	}
	now := s.now().UTC()
	e.State, e.CompletedAt = StateCompleted, &now
	doc, _ := json.Marshal(e)
	pipe := s.Redis.TxPipeline()
	pipe.HSet(ctx, key(e.Tenant, e.ID), "doc", doc)
	pipe.HDel(ctx, key(e.Tenant, e.ID), "job", "cursor")
	pipe.Del(ctx, refsKey(e.Tenant, e.ID))
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	if s.OnErased != nil {
		s.OnErased(ctx, e)
	}
	log.Info("erasure completed", "erased", e.Erased)
	return nil
}

func (s *Service) save(ctx context.Context, e *Erasure) error {
	doc, _ := json.Marshal(e)
	return s.Redis.HSet(ctx, key(e.Tenant, e.ID), "doc", doc).Err()
}

// refer remembers ids of the patient's records, which clinic events and
// tasks name.
func (s *Service) refer(ctx context.Context, e *Erasure, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	members := make([]any, len(ids))
	for i, id := range ids {
		members[i] = id
	}
	return s.Redis.SAdd(ctx, refsKey(e.Tenant, e.ID), members...).Err()
}

func (s *Service) step(ctx context.Context, e *Erasure, j job, step string) (int, error) {
	switch step {
	case StepPlans:
		if s.Followups == nil {
			return 0, nil
		}
		cancel := func(ctx context.Context, tenant, id, reason string) error {
			if s.Plans == nil {
				return nil
			}
			return s.Plans.CancelStep(ctx, tenant, id, reason)
		}
		ids, err := s.Followups.Erase(ctx, e.Tenant, j.Identities, j.ContactID, cancel)
		return len(ids), err
	case StepQuestionnaires:
		if s.Questionnaires == nil {
			return 0, nil
		}
		ids, err := s.Questionnaires.Erase(ctx, e.Tenant, j.Identities)
		if err == nil {
			err = s.refer(ctx, e, ids)
		}
		return len(ids), err
	case StepMessages:
		return s.eraseMessages(ctx, e, j)
	case StepArchive:
		return s.eraseArchived(ctx, e, j)
	case StepReplies:
		if s.Replies == nil {
			return 0, nil
		}
		ids, err := s.Replies.Erase(ctx, e.Tenant, j.Identities)
		if err == nil {
			err = s.refer(ctx, e, ids)
		}
		return len(ids), err
	case StepConsent:
		if s.Consent == nil {
			return 0, nil
		}
		return len(j.Identities), s.Consent.Erase(ctx, e.Tenant, j.Identities)
	case StepAudiences:
		if s.Audiences == nil {
			return 0, nil
		}
		return s.Audiences.Erase(ctx, e.Tenant, j.Identities)
	case StepBroadcasts:
		if s.Broadcasts == nil {
			return 0, nil
		}
		return s.Broadcasts.Erase(ctx, e.Tenant, j.Identities)
	case StepWebhooks:
		if s.Webhooks == nil {
			return 0, nil
		}
		m, err := s.matcher(ctx, e, j)
		if err != nil {
			return 0, err
		}
		return s.Webhooks.EraseDead(ctx, e.Tenant, m)
	case StepTasks:
		if s.Tasks == nil {
			return 0, nil
		}
		m, err := s.matcher(ctx, e, j)
		if err != nil {
			return 0, err
		}
		return workers.EraseTasks(s.Tasks, m)
	case StepContact:
		if s.Contacts == nil {
			return 0, nil
		}
		return 1, s.Contacts.Erase(ctx, e.Tenant, j.ContactID, j.Identities)
	}
	return 0, fmt.Errorf("unknown step %q", step)
}

// eraseMessages walks the tenant's messages, newest first, from the
// cursor saved after each page: each message to the patient still
// waiting to be sent is canceled through the messaging service (its task
// deleted), its recordings deleted, then its record scrubbed.
func (s *Service) eraseMessages(ctx context.Context, e *Erasure, j job) (int, error) {
	if s.Ledger == nil {
		return 0, nil
	}
	k := key(e.Tenant, e.ID)
	cursor, err := s.Redis.HGet(ctx, k, "cursor").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, err
	}
	if cursor == "-" {
		return 0, nil // done before the step was recorded
	}
	mine := recipientMatcher(j)
	n := 0
	for {
		// The archive has a step of its own.
		page, err := s.Ledger.Find(ctx, e.Tenant, ledger.Query{Before: cursor, Limit: ledger.MaxScan, Scan: ledger.MaxScan, HotOnly: true})
		if err != nil {
			return n, err
		}
		var refs []string
		for _, m := range page.Messages {
			if !mine(m.To) {
				continue
			}
			if m.Status.Rank() < ledger.StatusSent.Rank() && s.Messages != nil {
				_, err := s.Messages.Cancel(ctx, e.Tenant, m.ID, Reason)
				if err != nil && !errors.Is(err, ledger.ErrConflict) && !errors.Is(err, ledger.ErrNotFound) {
					return n, err
				}
			}
			if s.Recordings != nil {
				if _, err := s.Recordings.EraseMessage(ctx, e.Tenant, m.ID); err != nil {
					return n, err
				}
			}
			if err := s.Ledger.Erase(ctx, e.Tenant, m.ID); err != nil {
				return n, err
			}
			refs = append(refs, m.ID)
			n++
		}
		if err := s.refer(ctx, e, refs); err != nil {
			return n, err
		}
		cursor = page.Next
		if cursor == "" {
			cursor = "-"
		}
		// The page's count is kept with the cursor, so a resumed scan
		// counts each message once.
		e.Erased[StepMessages] += n
		n = 0
		if err := s.Redis.HSet(ctx, k, "cursor", cursor).Err(); err != nil {
			return 0, err
		}
		if err := s.save(ctx, e); err != nil {
			return 0, err
		}
		if cursor == "-" {
			return 0, nil
		}
	}
}

// eraseArchived scrubs the patient's messages in the archive, their
// recordings deleted first.
func (s *Service) eraseArchived(ctx context.Context, e *Erasure, j job) (int, error) {
	if s.Archive == nil {
		return 0, nil
	}
	mine := recipientMatcher(j)
	return s.Archive.Erase(ctx, e.Tenant, func(m *ledger.Message) bool { return mine(m.To) }, func(m *ledger.Message) error {
		if s.Recordings != nil {
			if _, err := s.Recordings.EraseMessage(ctx, e.Tenant, m.ID); err != nil {
				return err
			}
		}
		return s.refer(ctx, e, []string{m.ID})
	})
}

// recipientMatcher says whether a message went to one of the patient's
// addresses.
func recipientMatcher(j job) func(ledger.Recipient) bool {
	want := map[string]bool{}
	for _, id := range j.Identities {
		want[id.Value] = true
	}
	return func(to ledger.Recipient) bool {
		return want[to.Phone] || want[to.Email] ||
			want[consent.Normalise(consent.Identity{Kind: consent.Email, Value: to.Email}).Value] || want[to.WeChatOpenID]
	}
}

// matcher says whether a payload (a clinic event, a task) holds the
// patient's data: one of their addresses, or the id of one of their
// messages, replies or responses.
func (s *Service) matcher(ctx context.Context, e *Erasure, j job) (func([]byte) bool, error) {
	refs, err := s.Redis.SMembers(ctx, refsKey(e.Tenant, e.ID)).Result()
	if err != nil {
		return nil, err
	}
	var needles [][]byte
	for _, id := range j.Identities {
		needles = append(needles, []byte(id.Value))
	}
	for _, r := range refs {
		if r != "" {
			needles = append(needles, []byte(r))
		}
	}
	return func(b []byte) bool {
		for _, n := range needles {
			if len(n) > 0 && strings.Contains(string(b), string(n)) {
				return true
			}
		}
		return false
	}, nil
}
