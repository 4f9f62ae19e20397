package messaging

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net/url"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/admission"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/egress"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/tenants"
	"github.com/patientmsg/gateway/internal/tracing"
	"github.com/patientmsg/gateway/templates"
	"github.com/patientmsg/gateway/workers"
)

// Enqueuer queues tasks (an *asynq.Client, or a pipelining one).
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// TaskDeleter removes queued tasks (an *asynq.Inspector).
type TaskDeleter interface {
	DeleteTask(queue, id string) error
}

// Service makes messages. Its zero fields are optional unless said.
type Service struct {
	// Ledger keeps the messages and Queue queues their sends (required).
	Ledger *ledger.Ledger
	Queue  Enqueuer
	// Tasks removes a canceled message's queued send (nil: it stays and
	// does nothing when it runs).
	Tasks TaskDeleter
	// Channels are the configured channels (required).
	Channels *channels.Registry
	// Contacts tell a recipient's locale and time zone.
	Contacts *contacts.Store
	// Tenants holds each tenant's delivery settings (nil: no quiet hours).
	Tenants *tenants.Store
	// Templates are the built-in and tenants' templates, rendered with
	// TemplateChain's locale fallbacks.
	Templates     *templates.Store
	TemplateChain templates.Chain
	// DefaultZone is the recipients' time zone when nothing else tells.
	DefaultZone string
	// Outbound says which callback URLs a tenant may give; the zero
	// value: public HTTPS only.
	Outbound egress.Policy
	// Admission counts a tenant's backlog (nil: no cap).
	Admission *admission.Controller
	// MaxAttempts and AttemptTimeout bound a message's sending.
	MaxAttempts    int
	AttemptTimeout time.Duration
	Logger         *slog.Logger
	// Now is the clock (required).
	Now func() time.Time
}

func (s *Service) log() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

// Prepare turns a draft into the ledger record to write: the template
// rendered, the draft validated, quiet hours applied. It writes nothing.
// A bad draft is an *InvalidError; any other error is the store's.
func (s *Service) Prepare(ctx context.Context, tenant string, d *Draft) (ledger.Request, error) {
	return s.prepare(ctx, tenant, d, nil)
}

// PrepareChecked is Prepare for a recipient whose addresses package
// address normalised already (an audience's, checked on upload): they are
// taken as they are, not parsed again (libphonenumber takes some 13 µs a
// number, a second of CPU for a broadcast to 100,000 people). d.To's
// addresses are not read; its time zone is.
func (s *Service) PrepareChecked(ctx context.Context, tenant string, d *Draft, to ledger.Recipient) (ledger.Request, error) {
	return s.prepare(ctx, tenant, d, &to)
}

func (s *Service) prepare(ctx context.Context, tenant string, d *Draft, checked *ledger.Recipient) (ledger.Request, error) {
	comp, err := s.compose(ctx, tenant, d, checked)
	if err != nil {
		return ledger.Request{}, err
	}
	v, err := d.validate(s.Channels.Names(), s.Now(), checked)
	if err != nil {
		return ledger.Request{}, err
	}
	if v.CallbackURL != "" {
		if err := s.CheckClinicURL("callback_url", v.CallbackURL); err != nil {
			return ledger.Request{}, err
		}
	}
	return s.requestOf(tenant, v, comp), nil
}

// CheckClinicURL refuses, naming field, a URL of the tenant's own the
// gateway will never post to (a private address not allowed, not HTTPS).
func (s *Service) CheckClinicURL(field, raw string) error {
	u, err := url.Parse(raw)
	if err == nil {
		err = s.Outbound.CheckURL(u)
	}
	if err != nil {
		return Invalid(field, err.Error())
	}
	return nil
}

// Submit writes the record and queues its send, the record first, in one
// round trip (ledger.CreateAhead). When either fails, both are removed, so
// no message sits "queued" forever and no send runs for a message its
// caller was told failed (a send that finds no record ends; see the send
// worker).
func (s *Service) Submit(ctx context.Context, id string, req ledger.Request) error {
	_, err := s.Ledger.CreateAhead(ctx, id, req, func(ctx context.Context) error {
		return s.Enqueue(ctx, s.Queue, id, req)
	})
	if err != nil {
		_ = s.Ledger.Delete(context.Background(), req.Tenant, id)
		if s.Tasks != nil {
			_ = s.Tasks.DeleteTask(workers.QueueFor(req.Priority), id)
		}
		return err
	}
	return nil
}

// requestOf is the ledger record of a validated draft, its quiet hours
// applied.
func (s *Service) requestOf(tenant string, v *Valid, c *composed) ledger.Request {
	req := ledger.Request{
		Tenant: tenant, Channel: v.Channel, To: v.To, Body: v.Body, Priority: v.Priority, SendAt: v.SendAt,
		Metadata: v.Metadata, CallbackURL: v.CallbackURL, Locale: v.Locale, Subject: v.Subject, HTML: v.HTML,
		WeChat: v.WeChat, Voice: v.Voice, ExpectReply: v.ExpectReply, CreatedAt: s.Now().UTC(),
	}
	req.Segments, req.Encoding = v.Units, v.Encoding
	req.Template, req.TemplateLocale = c.template, c.locale
	if c.settings.RetentionDays > 0 {
		req.Retention = time.Duration(c.settings.RetentionDays) * 24 * time.Hour
	}
	s.applyQuietHours(&req, c, v.TimeZone)
	return req
}

// Enqueue queues a message's send task on q (the task id is the message
// id: queueing it twice is a no-op).
func (s *Service) Enqueue(ctx context.Context, q Enqueuer, id string, req ledger.Request) error {
	o := workers.SendOptionsOf(id, req, s.MaxAttempts, s.AttemptTimeout)
	o.TraceParent = tracing.TraceParent(ctx)
	t, err := workers.NewSendTask(o)
	if err != nil {
		return err
	}
	_, err = q.EnqueueContext(ctx, t)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil // already queued
	}
	return err
}

// Accepted is a message Accept made, or found made by an earlier request
// with the same idempotency key (Replayed).
type Accepted struct {
	ID       string
	Status   ledger.Status
	Request  ledger.Request
	Replayed bool
	// Rate is where the tenant stands against its request rate once
	// AcceptRequest counted the request (with an error too); the zero
	// RateState otherwise.
	Rate admission.RateState
}

// Idempotency is a request's idempotency key and the hash of the request
// it came with; the zero value makes every request new.
type Idempotency struct {
	Key      string
	BodyHash string
	TTL      time.Duration
}

// Accept makes the message of a draft: prepared, counted against its
// tenant's backlog, written and queued. With an idempotency key seen
// before, it makes nothing new and returns that message (finishing its
// queueing if the first request died half-way); a key seen with another
// request is ledger.ErrIdempotencyMismatch. A refusal of the backlog cap is
// the admission package's error.
func (s *Service) Accept(ctx context.Context, tenant string, d *Draft, idem Idempotency) (Accepted, error) {
	return s.accept(ctx, tenant, d, idem, false)
}

// AcceptRequest is Accept for a request of the API's that was not counted
// against its tenant's request rate yet: it is counted in the round trip
// that counts the message in its backlog, and a request over the rate is
// refused with the admission package's *RateLimitedError (a crisis
// message never is) before anything else is written. A draft that does
// not validate is counted all the same.
func (s *Service) AcceptRequest(ctx context.Context, tenant string, d *Draft, idem Idempotency) (Accepted, error) {
	return s.accept(ctx, tenant, d, idem, true)
}

func (s *Service) accept(ctx context.Context, tenant string, d *Draft, idem Idempotency, rated bool) (Accepted, error) {
	req, err := s.Prepare(ctx, tenant, d)
	if err != nil {
		return s.rateOnly(ctx, tenant, d.Priority, rated, err)
	}
	id := ledger.NewID()
	// The tenant's request rate and its backlog on the channel (every
	// priority but crisis), first: a request over the rate costs one round
	// trip and writes nothing else.
	st, counted, err := s.admit(ctx, id, req, rated)
	var full *admission.BacklogFullError
	if err != nil && (idem.Key == "" || !errors.As(err, &full)) {
		return Accepted{Rate: st}, err
	}
	// Take the message out of the backlog when it is not queued after all.
	unreserve := func() {
		if counted {
			s.Release(req.Tenant, req.Channel, req.Priority, id)
		}
	}
	// Free the key when nothing is queued, so the client's retry is a new attempt.
	releaseKey := func() {
		if idem.Key != "" {
			_ = s.Ledger.ReleaseIdempotencyKey(context.Background(), tenant, idem.Key)
		}
	}
	if idem.Key != "" {
		// A retry of a message accepted before is answered with it, even
		// when the backlog has filled since: a client told 429 might give
		// up and send it again under a new key.
		first, cerr := s.Ledger.ClaimIdempotencyKey(ctx, tenant, idem.Key, idem.BodyHash, id, idem.TTL)
		if cerr == nil && first != id {
			unreserve()
			r, err := s.replay(ctx, tenant, first, req)
			r.Rate = st
			return r, err
		}
		if cerr != nil || err != nil {
			unreserve()
			if cerr == nil {
				releaseKey() // claimed by this request, refused by the backlog
			}
			return Accepted{Rate: st}, cmp.Or(cerr, err)
		}
	}
	if err := s.Submit(ctx, id, req); err != nil {
		unreserve()
		releaseKey()
		return Accepted{Rate: st}, err
	}
	s.log().Debug("message queued", "tenant", tenant, "msg_id", id, "channel", req.Channel, "priority", req.Priority)
	status := ledger.StatusQueued
	if req.SendAt != nil {
		status = ledger.StatusScheduled
	}
	return Accepted{ID: id, Status: status, Request: req, Rate: st}, nil
}

// rateOnly counts a request that ends before its message is counted in
// the backlog against its tenant's rate (when rated), and returns err, or
// the rate's refusal in its place.
func (s *Service) rateOnly(ctx context.Context, tenant, priority string, rated bool, err error) (Accepted, error) {
	if !rated || s.Admission == nil {
		return Accepted{}, err
	}
	st, rerr := s.Admission.Rate(ctx, tenant, priority == workers.PriorityCrisis)
	if rerr != nil {
		return Accepted{Rate: st}, rerr
	}
	return Accepted{Rate: st}, err
}

// replay returns the message an earlier request with the same idempotency
// key made, and queues nothing new.
func (s *Service) replay(ctx context.Context, tenant, id string, req ledger.Request) (Accepted, error) {
	m, err := s.Ledger.Get(ctx, tenant, id)
	if errors.Is(err, ledger.ErrNotFound) {
		// The first request claimed the key but its record is not there yet
		// (in flight, or it died before writing): finish its work under its id.
		if _, err := s.Ledger.Create(ctx, id, req); err != nil {
			return Accepted{}, err
		}
		if m, err = s.Ledger.Get(ctx, tenant, id); err != nil {
			return Accepted{}, err
		}
	} else if err != nil {
		return Accepted{}, err
	}
	if m.Status.Rank() == 0 {
		// Make sure it is queued (the first request may have died between
		// writing the record and queueing it); the task id makes this a no-op
		// when it is.
		if err := s.Enqueue(ctx, s.Queue, id, m.Request); err != nil {
			return Accepted{}, err
		}
	}
	return Accepted{ID: m.ID, Status: m.Status, Request: m.Request, Replayed: true}, nil
}

// admit counts a message in its tenant's backlog on its channel and
// reports whether it was counted (crisis messages are not; a full backlog
// is an *admission.BacklogFullError); with rated, the request is counted
// against its tenant's rate in the same round trip.
func (s *Service) admit(ctx context.Context, id string, req ledger.Request, rated bool) (admission.RateState, bool, error) {
	a := s.Admission
	if a == nil {
		return admission.RateState{}, false, nil
	}
	m := admission.Message{Tenant: req.Tenant, Channel: req.Channel, ID: id, Priority: req.Priority, Cost: max(req.Segments, 1)}
	if req.SendAt != nil {
		m.Due = *req.SendAt
	}
	if rated {
		return a.AdmitMessage(ctx, m)
	}
	counted, err := a.Reserve(ctx, m)
	return admission.RateState{}, counted, err
}

// Release takes a message that will not be sent (canceled, or not queued
// after all) out of its tenant's backlog.
func (s *Service) Release(tenant, channel, priority, id string) {
	a := s.Admission
	if a == nil || priority == workers.PriorityCrisis {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Release(ctx, tenant, channel, id); err != nil {
		// The backlog sweep removes it later.
		s.log().Warn("message not taken out of its tenant's backlog", "msg_id", id, "err", err)
	}
}

// Cancel cancels a tenant's message the provider does not have yet and
// removes its queued task; reason is what its history says
// (ledger.CanceledByAPI for the API's). ledger.ErrNotFound and
// *ledger.ConflictError say why not.
func (s *Service) Cancel(ctx context.Context, tenant, id, reason string) (*ledger.Message, error) {
	if err := s.Ledger.Cancel(ctx, tenant, id, reason); err != nil {
		if errors.Is(err, ledger.ErrNotFound) {
			// Moved to the archive past the hot window: final, too late.
			if m, gerr := s.Ledger.Get(ctx, tenant, id); gerr == nil {
				return nil, &ledger.ConflictError{Status: m.Status, Reason: "final"}
			}
		}
		return nil, err
	}
	m, err := s.Ledger.Get(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	// The ledger is authoritative (a worker that picks the task up sees
	// "canceled" and sends nothing); removing the task just frees the queue.
	if s.Tasks != nil {
		if err := s.Tasks.DeleteTask(workers.QueueFor(m.Priority), id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			s.log().Debug("canceled message's task not deleted", "msg_id", id, "err", err)
		}
	}
	// No worker may see the task again to take it out of the backlog.
	s.Release(tenant, m.Channel, m.Priority, id)
	return m, nil
}

// settingsOf returns a tenant's delivery settings; without a settings
// store, no quiet hours apply.
func (s *Service) SettingsOf(ctx context.Context, tenant string) (tenants.Settings, error) {
	return s.settingsOf(ctx, tenant)
}

// Page sends an on-call page as message id: a crisis message to a member
// of the care team (an escalated reply). It is validated as every message
// is, but quiet hours never hold it back: the person it goes to is on
// call. Paging again with the same id makes no second message.
func (s *Service) Page(ctx context.Context, tenant, channel, phone, text, id string) error {
	d := &Draft{Channel: channel, To: &To{Phone: &phone}, Body: &text, Priority: workers.PriorityCrisis}
	v, err := d.Validate(s.Channels.Names(), s.Now())
	if err != nil {
		return err
	}
	req := s.requestOf(tenant, v, &composed{})
	if _, err := s.Ledger.Create(ctx, id, req); err != nil {
		return err
	}
	// Queued by its id: a second time is a no-op.
	return s.Enqueue(ctx, s.Queue, id, req)
}

// EnsureQueued queues a message's send task on q unless a task with its id
// is queued already; it reports whether it queued one.
func (s *Service) EnsureQueued(ctx context.Context, q Enqueuer, id string, req ledger.Request) (bool, error) {
	o := workers.SendOptionsOf(id, req, s.MaxAttempts, s.AttemptTimeout)
	o.TraceParent = tracing.TraceParent(ctx)
	t, err := workers.NewSendTask(o)
	if err != nil {
		return false, err
	}
	_, err = q.EnqueueContext(ctx, t)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return false, nil
	}
	return err == nil, err
}

// PreviewTemplate renders the tenant's template of that name (or the
// built-in one) in every channel its locale has a form for, with the PHI
// findings under the tenant's settings: what POST
// /v1/templates/{name}/preview and the console show. No template is
// templates.ErrNotFound.
func (s *Service) PreviewTemplate(ctx context.Context, tenant, name, locale string, vars map[string]string) (*templates.Preview, error) {
	if s.Templates == nil {
		return nil, templates.ErrNotFound
	}
	t, err := s.Templates.Get(ctx, tenant, name)
	if err != nil {
		return nil, err
	}
	set, err := s.settingsOf(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return t.Preview(s.TemplateChain, locale, vars, set.AllowPHI), nil
}
