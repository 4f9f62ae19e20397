// Package service assembles the gateway from its configuration: Redis, the
// ledger, the channels, the HTTP API and the workers. The command, the
// end-to-end tests and the benchmark all start the gateway through it.
package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/email"
	"github.com/patientmsg/gateway/gateway"
	"github.com/patientmsg/gateway/gateway/console"
	"github.com/patientmsg/gateway/internal/admission"
	"github.com/patientmsg/gateway/internal/apikeys"
	"github.com/patientmsg/gateway/internal/archive"
	"github.com/patientmsg/gateway/internal/audiences"
	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/autopipe"
	"github.com/patientmsg/gateway/internal/broadcasts"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/egress"
	"github.com/patientmsg/gateway/internal/erasure"
	"github.com/patientmsg/gateway/internal/escalation"
	"github.com/patientmsg/gateway/internal/followups"
	"github.com/patientmsg/gateway/internal/inbound"
	"github.com/patientmsg/gateway/internal/incidents"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/metrics"
	"github.com/patientmsg/gateway/internal/questionnaires"
	"github.com/patientmsg/gateway/internal/ratelimit"
	"github.com/patientmsg/gateway/internal/recordings"
	"github.com/patientmsg/gateway/internal/redisconf"
	"github.com/patientmsg/gateway/internal/replies"
	"github.com/patientmsg/gateway/internal/tenants"
	"github.com/patientmsg/gateway/internal/tracing"
	"github.com/patientmsg/gateway/internal/users"
	"github.com/patientmsg/gateway/internal/webhooks"
	"github.com/patientmsg/gateway/templates"
	"github.com/patientmsg/gateway/workers"
)

// Options are what the configuration does not hold.
type Options struct {
	Logger *slog.Logger
	// Transport carries provider API calls; http.DefaultTransport when nil.
	// Tests pass one that refuses non-loopback hosts.
	Transport http.RoundTripper
	// WebhookGuard, when set, wraps the transport of deliveries to clinics'
	// URLs, which is package egress's (public addresses and
	// GATEWAY_WEBHOOK_ALLOW_NETWORKS only) and stays underneath. Tests pass
	// channeltest.LoopbackOnly, so deliveries never leave the machine.
	WebhookGuard func(http.RoundTripper) http.RoundTripper
	// Listener, when set, is used instead of listening on Config.Addr.
	Listener net.Listener
	// MailInListener, when set, is used instead of listening on
	// Config.Email.InboundAddr, which must still be set to run the inbound
	// SMTP listener (dev knows its address before the gateway starts).
	MailInListener net.Listener
	// EmailTLS, when set, is the TLS configuration of SMTP connections
	// (tests trust their own certificate authority with it).
	EmailTLS *tls.Config
	// Channels are channels beyond those the configuration enables (a
	// clinic's own adapter, a test's); each must be declared
	// (channels.Declare) under its name.
	Channels []channels.Channel
	// NoMetrics leaves the Prometheus metrics out (the benchmark measures
	// what they cost); /metrics then serves none of the gateway's own.
	NoMetrics bool
	// TracerProvider, when set, makes the gateway's spans instead of the
	// one OTEL_EXPORTER_OTLP_ENDPOINT configures (tests record them with
	// it); the service does not shut it down.
	TracerProvider trace.TracerProvider
}

// Service is a running gateway process (API, workers, or both).
type Service struct {
	Config   config.Config
	Role     config.Role
	Redis    redis.UniversalClient
	Ledger   *ledger.Ledger
	Consent  *consent.Ledger
	Replies  *replies.Store
	Webhooks *webhooks.Store
	Events   *webhooks.Publisher
	// Escalator flags urgent replies and notifies the on-call targets.
	Escalator *escalation.Escalator
	// Inbound takes what providers report: patients' messages, delivery
	// reports, answers of calls.
	Inbound  *inbound.Receiver
	Channels *channels.Registry
	// Reconciler asks providers about lost status callbacks (worker
	// processes only; nil otherwise).
	Reconciler *inbound.Reconciler
	// Archive moves final messages past GATEWAY_HOT_RETENTION to the blob
	// store (nil when it is off).
	Archive *archive.Archive
	// Followups are the follow-up plans.
	Followups *followups.Store
	// Incidents group a crisis's broadcasts, with the cadence of updates.
	Incidents *incidents.Service
	// Questionnaires are the questionnaires and their conversations.
	Questionnaires *questionnaires.Service
	// Senders paces each channel's sender across all processes.
	Senders *ratelimit.Senders
	// Admission is admission control in front of the queues.
	Admission *admission.Controller
	// Recordings is the blob store of call recordings (nil without voice).
	Recordings *recordings.Store
	// Messages makes every message; Broadcast runs crisis broadcasts and
	// Plans makes follow-up plans, through it. Every role has them.
	Messages  *messaging.Service
	Broadcast *broadcasts.Engine
	Plans     *followups.Planner
	// Erasures erase patients' data on request.
	Erasures *erasure.Service
	// Audit is the audit log of who read or changed patient data.
	Audit *audit.Log
	// AuditExport exports it (a worker with a signing key; nil otherwise).
	AuditExport *audit.Exporter
	stopAudit   context.CancelFunc
	// Users are the console's accounts and sessions.
	Users *users.Store
	// Keys are the managed API keys (GATEWAY_API_KEYS are the bootstrap
	// ones).
	Keys *apikeys.Store
	// Metrics are the process's Prometheus metrics, served on the ops
	// listener.
	Metrics *metrics.Metrics
	API     *gateway.Server
	Workers *workers.Server
	// MailIn is the inbound SMTP listener of an API process
	// (EMAIL_INBOUND_ADDR; nil when off).
	MailIn *email.Listener

	client    *asynq.Client
	inspector *asynq.Inspector
	hot       *autopipe.Client // Redis' client batching the message path's commands
	closers   []func() error
	stopSweep context.CancelFunc
	ln        net.Listener
	mailLn    net.Listener
	serveErr  chan error
	ops       *http.Server
	opsAddr   string
	log       *slog.Logger
}

// New validates the configuration and builds the parts the role needs.
func New(cfg config.Config, role config.Role, o Options) (*Service, error) {
	if err := cfg.Validate(role); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	raw, err := NewRedis(cfg)
	if err != nil {
		return nil, err
	}
	// Many requests and tasks at once each make a few small commands: the
	// commands waiting at any moment go to Redis as one pipeline (one
	// system call and one wake-up on each side, instead of one per
	// command), each still run on its own and answered to its caller.
	// What must hold a connection of its own (WATCH, subscriptions,
	// blocking commands, the replication fence's WAIT) runs on raw.
	rdb := &hotClient{Client: autopipe.New(raw, autopipe.Options{}), raw: raw}
	s := &Service{Config: cfg, Role: role, Redis: raw, hot: rdb.Client, Ledger: ledger.New(rdb, cfg.Retention), Consent: consent.New(rdb),
		log: o.Logger, ln: o.Listener, mailLn: o.MailInListener}
	if !o.NoMetrics {
		s.Metrics = metrics.New()
	}
	s.Ledger.Metrics = s.Metrics

	tracer, err := s.newTracer(cfg, o)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	fence := newFence(cfg, raw)
	if err := s.newAudit(cfg, role, o.Logger); err != nil {
		rdb.Close()
		return nil, err
	}
	s.Replies = replies.New(rdb, cfg.Retention)
	s.Webhooks = webhooks.NewStore(rdb)
	s.client = asynq.NewClientFromRedisClient(rdb)
	s.Events = &webhooks.Publisher{Store: s.Webhooks, Queue: s.client, Log: o.Logger.With("comp", "webhooks"),
		Attempts: cfg.WebhookAttempts}
	// Remember, with each new message, that it is the last one to its
	// recipient: a reply from that address is filed with its tenant.
	// A question (expect_reply) is also an open prompt of its recipient
	// until it closes.
	onCreate := func(ctx context.Context, pipe redis.Pipeliner, id string, req ledger.Request) {
		who := workers.IdentityOf(req.Channel, req.To)
		pipe.Set(ctx, replies.LastKey(who), replies.LastValue(req.Tenant, id), cfg.Retention)
		contacts.EnsureIn(ctx, pipe, req.Tenant, who, req.Locale, req.CreatedAt)
		replies.AddMessage(ctx, pipe, req.Tenant, who, id, req.CreatedAt, cfg.Retention)
		if er := req.ExpectReply; er != nil {
			opens := req.CreatedAt
			if req.SendAt != nil {
				opens = *req.SendAt
			}
			closes := opens.Add(time.Duration(er.Within) * time.Second)
			key := replies.PromptsKey(who)
			pipe.ZAdd(ctx, key, redis.Z{Score: float64(closes.UnixMilli()), Member: replies.LastValue(req.Tenant, id)})
			ttl := time.Until(closes) + time.Minute
			pipe.ExpireNX(ctx, key, ttl) // a new set
			pipe.ExpireGT(ctx, key, ttl) // never shorten the life of other open questions
		}
	}
	s.Ledger.OnCreate = onCreate
	s.Followups = followups.NewStore(rdb, cfg.Retention)
	s.inspector = asynq.NewInspectorFromRedisClient(rdb)
	// A patient who opts out, or replies, stops the follow-up plans that
	// say so (stop_on), in every process that records it.
	s.Consent.OnChange = func(ctx context.Context, tenant string, id consent.Identity, optedOut bool) {
		s.Metrics.ConsentChanged(string(id.Kind), optedOut)
		if optedOut {
			s.stopPlans(ctx, id, followups.StopOnOptOut, "the patient opted out")
			s.stopQuestionnaires(ctx, tenant, id)
		}
	}
	onReply := func(ctx context.Context, _ string, from consent.Identity, urgent bool) {
		if urgent {
			s.stopPlans(ctx, from, followups.StopOnUrgentReply, "the patient sent an urgent reply")
		} else {
			s.stopPlans(ctx, from, followups.StopOnAnyReply, "the patient replied")
		}
	}
	s.Escalator = &escalation.Escalator{Redis: rdb, Queue: s.client, Events: s.Events, Log: o.Logger.With("comp", "escalation"),
		Send: s.sendNotification, Metrics: s.Metrics}
	s.Escalator.Audit = s.Audit
	chs, closers, err := buildChannels(cfg, rdb, o)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	s.closers = append(s.closers, closers...)
	for _, ch := range o.Channels {
		if _, ok := channels.SpecOf(ch.Name()); !ok {
			rdb.Close()
			return nil, fmt.Errorf("channel %s is not declared (channels.Declare)", ch.Name())
		}
	}
	s.Channels = channels.NewRegistry(append(chs, o.Channels...)...)
	if hasRecordings(chs) {
		store, err := recordings.Open(context.Background(), cfg.BlobURL)
		if err != nil {
			rdb.Close()
			return nil, err
		}
		s.Recordings = store
		s.closers = append(s.closers, store.Close)
		if cfg.RecordingKeys != "" {
			if store.Keys, err = recordings.ParseKeyring(cfg.RecordingKeys); err != nil {
				rdb.Close()
				return nil, fmt.Errorf("RECORDING_KEYS: %w", err)
			}
		} else {
			s.log.Warn("call recordings are stored unencrypted: set RECORDING_KEYS")
		}
	}

	senderCfgs, senderKeys := senderConfigs(s.Channels.All())
	senders, workerSenders, err := newSenders(cfg, rdb, senderCfgs, senderKeys)
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("senders: %w", err)
	}
	s.Senders = senders
	if s.Admission, err = newAdmission(cfg, rdb, senderCfgs, o.Logger); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("admission: %w", err)
	}
	tpl, chain, err := newTemplates(cfg, rdb)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	settings, err := tenants.NewStore(rdb, tenants.Settings{QuietHours: cfg.Quiet.Window,
		CrisisInQuietHours: cfg.Quiet.Crisis, TimeZone: cfg.Quiet.TimeZone})
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("quiet hours: %w", err)
	}
	settings.MaxRetention, settings.MaxRecordingRetention = cfg.Retention, cfg.RecordingRetention
	// The one way a message is made, for the API, broadcasts, follow-up
	// plans and escalation pages alike.
	contactStore := contacts.New(rdb)
	s.Messages = &messaging.Service{Ledger: s.Ledger, Queue: s.client, Tasks: s.inspector, Channels: s.Channels,
		Contacts: contactStore, Tenants: settings, Templates: tpl, TemplateChain: chain, DefaultZone: cfg.Quiet.TimeZone,
		Outbound: egress.Policy{Allow: cfg.WebhookAllowNetworks}, Admission: s.Admission,
		MaxAttempts: cfg.Worker.MaxAttempts, AttemptTimeout: AttemptTimeout(cfg), Logger: o.Logger.With("comp", "messaging"), Now: time.Now}
	// A broadcast writes for thousands of people at once: through a client
	// that sends their round trips together.
	batched := autopipe.New(raw, autopipe.Options{})
	s.closers = append(s.closers, batched.Close)
	bulkLedger := ledger.New(batched, cfg.Retention)
	bulkLedger.OnCreate, bulkLedger.Metrics = onCreate, s.Metrics
	if err := s.openArchive(s.Ledger, bulkLedger); err != nil {
		rdb.Close()
		return nil, err
	}
	broadcastStore := broadcasts.NewStore(rdb, cfg.Retention)
	broadcastStore.Metrics = s.Metrics
	bulkStore := broadcasts.NewStore(batched, cfg.Retention)
	bulkStore.Metrics = s.Metrics
	s.Incidents = &incidents.Service{Store: incidents.NewStore(rdb, cfg.Retention), Queue: s.client, Events: s.Events,
		Logger: o.Logger.With("comp", "incidents")}
	audienceStore := audiences.NewStore(rdb, audiences.DefaultTTL)
	s.Broadcast = (&broadcasts.Engine{Messages: s.Messages, Store: broadcastStore, Audiences: audienceStore, Queue: s.client,
		Bulk:     broadcasts.Bulk{Ledger: bulkLedger, Queue: asynq.NewClientFromRedisClient(batched), Store: bulkStore},
		Channels: s.Channels, Templates: tpl, TemplateChain: chain, MinAckTimeout: cfg.MinAckTimeout, DefaultRegion: cfg.DefaultRegion,
		Senders: senders, Prices: broadcasts.Prices{Currency: cfg.Prices.Currency, SMSSegment: cfg.Prices.SMSSegment, VoiceMinute: cfg.Prices.VoiceMinute,
			WeChatMessage: cfg.Prices.WeChatMessage, EmailMessage: cfg.Prices.Email},
		Incidents: s.Incidents, Logger: o.Logger.With("comp", "broadcast"), Now: time.Now}).Init()
	s.Questionnaires = &questionnaires.Service{Redis: rdb, Messages: s.Messages, Escalator: s.Escalator, Events: s.Events,
		Queue: s.client, Retention: cfg.Retention, PublicURL: cfg.PublicURL, Logger: o.Logger.With("comp", "questionnaires"), Now: time.Now}
	s.Plans = &followups.Planner{Store: s.Followups, Messages: s.Messages, Contacts: contactStore,
		Questionnaires: questionnaires.PlanStarter{Service: s.Questionnaires, TTL: cfg.Retention},
		Logger:         o.Logger.With("comp", "followups"), Now: time.Now}
	// What providers report: the API takes it from their webhooks, the
	// workers file the answers it queues.
	helpTexts := inbound.NewHelpTexts(rdb)
	s.Inbound = &inbound.Receiver{Redis: rdb, Ledger: s.Ledger, Consent: s.Consent, Replies: s.Replies, HelpTexts: helpTexts,
		Events: s.Events, Escalator: s.Escalator, Queue: s.client, Tenants: tenantsOf(cfg.APIKeys),
		MaxAttempts: cfg.Worker.MaxAttempts, AttemptTimeout: AttemptTimeout(cfg), Logger: o.Logger.With("comp", "inbound"),
		OnReply: onReply, OnStatus: s.Broadcast.Status, OnAnswer: s.Broadcast.Answer, Questionnaires: s.Questionnaires,
		Metrics: s.Metrics,
	}
	s.Erasures = &erasure.Service{Redis: rdb, Queue: s.client, Contacts: contactStore, Ledger: s.Ledger, Messages: s.Messages,
		Recordings: s.Recordings, Replies: s.Replies, Consent: s.Consent, Questionnaires: s.Questionnaires, Archive: s.erasableArchive(),
		Followups: s.Followups, Plans: s.Plans, Audiences: audienceStore, Broadcasts: broadcastStore, Webhooks: s.Webhooks,
		Tasks: s.inspector, Logger: o.Logger.With("comp", "erasure"), Now: time.Now,
		OnErased: func(ctx context.Context, e *erasure.Erasure) {
			s.Audit.Record(ctx, audit.Event{Tenant: e.Tenant, Actor: audit.ActorWorker, Action: audit.ActionErase,
				Object: "erasure:" + e.ID, Outcome: audit.OK})
		}}
	s.auditConsent(contactStore)
	s.Users = users.New(rdb, users.Config{})
	s.Keys = apikeys.New(rdb, apikeys.Config{Audit: s.Audit, Logger: o.Logger})
	if role&config.RoleAPI != 0 {
		con, err := console.New(console.Options{Users: s.Users, Broadcasts: broadcastStore, Broadcast: s.Broadcast,
			Audiences: audienceStore, Escalator: s.Escalator, Replies: s.Replies, Ledger: s.Ledger, Settings: s.Messages,
			Contacts: contactStore, Consent: s.Consent, Events: s.Events, Senders: senders, Queues: s.inspector,
			Messages: s.Messages, IdempotencyTTL: cfg.IdempotencyTTL, Followups: s.Followups, Plans: s.Plans, Templates: tpl, Incidents: s.Incidents, Questionnaires: s.Questionnaires,
			DefaultRegion: cfg.DefaultRegion, MaxUploadBytes: cfg.MaxUploadBytes, Secure: secureCookies(cfg.PublicURL),
			Logger: o.Logger})
		if err != nil {
			rdb.Close()
			return nil, err
		}
		s.API = gateway.New(gateway.Options{
			Console: con,
			Redis:   rdb, Messages: s.Messages, Ledger: s.Ledger, Queue: s.client, Tasks: s.inspector, Channels: s.Channels, Recordings: s.Recordings, Consent: s.Consent, Contacts: contactStore, Replies: s.Replies, Webhooks: s.Webhooks, Events: s.Events, Escalator: s.Escalator,
			APIKeys: cfg.APIKeys, PublicURL: cfg.PublicURL, MaxRequestBytes: cfg.MaxRequestBytes,
			IdempotencyTTL: cfg.IdempotencyTTL, MaxAttempts: cfg.Worker.MaxAttempts,
			AttemptTimeout: AttemptTimeout(cfg), Logger: o.Logger,
			Audiences: audienceStore, MaxUploadBytes: cfg.MaxUploadBytes, DefaultRegion: cfg.DefaultRegion,
			Broadcasts: broadcastStore, Broadcast: s.Broadcast, Incidents: s.Incidents,
			Inbound: s.Inbound, HelpTexts: helpTexts, Audit: s.Audit,
			Followups: s.Followups, Plans: s.Plans, Questionnaires: s.Questionnaires, Tenants: settings, Templates: tpl, TemplateChain: chain, DefaultZone: cfg.Quiet.TimeZone, Senders: senders,
			Outbound:  egress.Policy{Allow: cfg.WebhookAllowNetworks},
			Admission: s.Admission, Fence: asUnitFence(fence), FailoverWait: failoverWait(cfg), Metrics: s.Metrics,
			Erasures: s.Erasures, Keys: s.Keys, Tracer: tracer,
		})
	}
	if role&config.RoleWorker != 0 {
		h := &workers.SendHandler{Ledger: s.Ledger, Channels: s.Channels, Grace: cfg.Worker.UnconfirmedGrace,
			MaxAttempts: cfg.Worker.MaxAttempts, Consent: s.Consent, CrisisExempt: map[string]bool{}, Events: s.Events,
			Logger: o.Logger.With("comp", "worker"), Senders: workerSenders, OnBroadcast: s.Broadcast.Status,
			RecordBroadcast: s.Broadcast.RecordMessage, Fence: asUnitFence(fence), Metrics: s.Metrics, Tracer: tracer}
		h.Backlog = s.Admission // messages leaving the queue leave their tenant's backlog
		h.Audit = s.Audit
		for _, t := range cfg.CrisisOptOutExempt {
			h.CrisisExempt[t] = true
		}
		hs := workers.Handlers{Send: h, Webhook: &webhooks.Deliverer{Store: s.Webhooks,
			Client: webhookClient(cfg, o), Log: o.Logger.With("comp", "webhooks"), Fence: fence},
			Escalation:    s.Escalator,
			Inbound:       &workers.InboundHandler{File: s.Inbound.FileReply, Late: s.Inbound.LateReport},
			Broadcast:     workers.BroadcastHandler(s.Broadcast),
			Questionnaire: &workers.QuestionnaireHandler{Fire: s.Questionnaires.Timer},
			Incident:      &workers.IncidentHandler{Fire: s.Incidents.Due},
			Followup:      &workers.FollowupHandler{Fire: s.Plans.Due},
			Erasure:       &workers.ErasureHandler{Fire: s.Erasures.Run}}
		if s.Recordings != nil {
			hs.Recording = &workers.RecordingHandler{Ledger: s.Ledger, Channels: s.Channels, Store: s.Recordings,
				Logger: o.Logger.With("comp", "worker")}
		}
		s.Workers = workers.NewServer(rdb, hs, s.Channels.Names(), workers.ServerConfig{
			Concurrency: cfg.Worker.Concurrency, CrisisConcurrency: cfg.Worker.CrisisConcurrency, ReplyConcurrency: cfg.Worker.ReplyConcurrency,
			ShutdownTimeout: cfg.ShutdownTimeout, PollInterval: cfg.Worker.PollInterval,
			DelayedPollInterval: cfg.Worker.DelayedPollInterval, Logger: o.Logger,
		})
	}
	return s, nil
}

// newTracer is the tracer of the gateway's spans: Options.TracerProvider's,
// else one exporting to OTEL_EXPORTER_OTLP_ENDPOINT (flushed and stopped
// at Shutdown), else nil: tracing is off and no span is made.
func (s *Service) newTracer(cfg config.Config, o Options) (trace.Tracer, error) {
	tp := o.TracerProvider
	if tp == nil {
		if cfg.Tracing.Endpoint == "" {
			return nil, nil
		}
		p, err := tracing.NewProvider(context.Background(), cfg.Tracing.Endpoint, cfg.Tracing.ServiceName)
		if err != nil {
			return nil, fmt.Errorf("tracing (OTEL_EXPORTER_OTLP_ENDPOINT): %w", err)
		}
		s.closers = append(s.closers, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return p.Shutdown(ctx)
		})
		tp = p
	}
	return tp.Tracer(tracing.Scope), nil
}

// secureCookies says whether the console's cookies are Secure: always,
// unless the gateway's public URL is plain HTTP on a loopback address
// (dev and the tests), where a browser would never send them back.
func secureCookies(publicURL string) bool {
	u, err := url.Parse(publicURL)
	if err != nil || u.Scheme != "http" {
		return true
	}
	host := u.Hostname()
	if host == "localhost" {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err != nil || !ip.IsLoopback()
}

// stopPlans stops the active follow-up plans of an identity whose stop_on
// holds the condition, canceling their steps not yet sent.
func (s *Service) stopPlans(ctx context.Context, id consent.Identity, condition, reason string) {
	n, err := s.Followups.StopFor(ctx, id, condition, reason, s.Plans.CancelStep)
	if err != nil {
		s.log.Error("could not stop follow-up plans", "condition", condition, "err", err)
	} else if n > 0 {
		s.log.Info("follow-up plans stopped", "condition", condition, "plans", n)
	}
}

// stopQuestionnaires ends the tenant's questionnaires in progress to an
// identity that opted out.
func (s *Service) stopQuestionnaires(ctx context.Context, tenant string, id consent.Identity) {
	n, err := s.Questionnaires.StopFor(ctx, tenant, id, "the patient opted out")
	if err != nil {
		s.log.Error("could not stop questionnaires", "tenant", tenant, "err", err)
	} else if n > 0 {
		s.log.Info("questionnaires stopped: the patient opted out", "tenant", tenant, "responses", n)
	}
}

// tenantsOf lists the tenants of the API keys, sorted, once each.
func tenantsOf(apiKeys map[string]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range apiKeys {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// newTemplates loads the built-in templates and the locale fallbacks.
func newTemplates(cfg config.Config, rdb redis.UniversalClient) (*templates.Store, templates.Chain, error) {
	builtin, err := templates.Builtin()
	if err != nil {
		return nil, templates.Chain{}, fmt.Errorf("built-in templates: %w", err)
	}
	fb, err := templates.ParseFallbacks(cfg.Templates.Fallbacks)
	if err != nil {
		return nil, templates.Chain{}, fmt.Errorf("TEMPLATE_LOCALE_FALLBACKS: %w", err)
	}
	return templates.NewStore(rdb, builtin), templates.NewChain(cfg.Templates.DefaultLocale, fb), nil
}

// APIDrain is how long a stopping API waits for open requests.
const APIDrain = 3 * time.Second

// AttemptTimeout bounds one send attempt: the provider call plus ledger writes.
func AttemptTimeout(cfg config.Config) time.Duration {
	return cfg.Worker.ProviderTimeout + 15*time.Second
}

// Start checks Redis, then starts the workers and the API listener.
func (s *Service) Start(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.Redis.Ping(pctx).Err(); err != nil {
		return fmt.Errorf("redis at REDIS_URL is not reachable: %w", err)
	}
	s.checkReplication(pctx)
	redisconf.Check(pctx, s.Redis, s.log)
	if s.Workers != nil {
		if err := s.Workers.Start(); err != nil {
			return fmt.Errorf("workers: %w", err)
		}
		if s.Recordings != nil {
			var sctx context.Context
			sctx, s.stopSweep = context.WithCancel(context.Background())
			go workers.SweepRecordings(sctx, s.Recordings, s.recordingRetentionOf(sctx), time.Hour, s.log.With("comp", "worker"))
		}
	}
	if s.Config.OpsAddr != "" {
		if err := s.startOps(); err != nil {
			if s.Workers != nil {
				s.Workers.Shutdown()
			}
			return err
		}
	}
	if err := s.startMailIn(); err != nil {
		if s.Workers != nil {
			s.Workers.Shutdown()
		}
		return err
	}
	if s.API != nil {
		if s.ln == nil {
			ln, err := net.Listen("tcp", s.Config.Addr)
			if err != nil {
				if s.Workers != nil {
					s.Workers.Shutdown()
				}
				return fmt.Errorf("GATEWAY_ADDR %s: %w", s.Config.Addr, err)
			}
			s.ln = ln
		}
		s.serveErr = make(chan error, 1)
		go func() { s.serveErr <- s.API.Serve(s.ln) }()
	}
	s.startAuditExport()
	s.startBacklogSweep()
	s.startOrphanWatch()
	s.startReconcile()
	s.startArchive()
	s.log.Info("gateway started", "api", s.API != nil, "workers", s.Workers != nil, "channels", s.Channels.Names(), "addr", s.Addr(),
		"ops", s.opsAddr)
	return nil
}

// Addr is the API's listening address ("" without an API).
func (s *Service) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Run starts the service and blocks until ctx is done (SIGTERM), then
// shuts down gracefully.
func (s *Service) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-s.serveErr:
		err = fmt.Errorf("API listener stopped: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.Config.ShutdownTimeout+5*time.Second)
	defer cancel()
	return errors.Join(err, s.Shutdown(sctx))
}

// Shutdown stops taking requests and tasks, lets in-flight work finish
// (bounded by GATEWAY_SHUTDOWN_TIMEOUT) and closes Redis.
func (s *Service) Shutdown(ctx context.Context) error {
	s.log.Info("shutting down: no new requests or tasks; finishing in-flight sends")
	// The API and the workers drain at the same time, so a process running
	// both stops within one shutdown timeout.
	var errs []error
	var wg sync.WaitGroup
	if s.Workers != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.Workers.Shutdown() }()
	}
	if s.API != nil && s.serveErr != nil {
		// API requests take milliseconds: give them APIDrain, then drop
		// connections that are idle or never sent a request (the HTTP server
		// would otherwise wait for its read timeout on them).
		actx, cancel := context.WithTimeout(ctx, APIDrain)
		if err := s.API.Shutdown(actx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			errs = append(errs, err)
		}
		cancel()
	}
	if s.ops != nil {
		errs = append(errs, s.ops.Shutdown(ctx))
	}
	wg.Wait()
	if s.stopSweep != nil {
		s.stopSweep()
	}
	if s.stopAudit != nil {
		s.stopAudit()
	}
	for _, c := range s.closers {
		errs = append(errs, c())
	}
	if s.client != nil {
		_ = s.client.Close()
	}
	if s.hot != nil {
		errs = append(errs, s.hot.Close())
	}
	errs = append(errs, s.Redis.Close())
	s.log.Info("shut down")
	return errors.Join(errs...)
}

// webhookClient carries deliveries to the clinics' URLs: it connects only
// to public addresses and the allowed networks, and follows no redirect.
// Provider APIs do not use it.
func webhookClient(cfg config.Config, o Options) *http.Client {
	c := egress.Policy{Allow: cfg.WebhookAllowNetworks}.Client(10 * time.Second)
	if o.WebhookGuard != nil {
		c.Transport = o.WebhookGuard(c.Transport)
	}
	return c
}

// sendNotification queues a crisis-priority message to an on-call target,
// through the ledger like any message.
func (s *Service) sendNotification(ctx context.Context, tenant string, t escalation.Target, text, id string) error {
	if _, ok := s.Channels.Get(t.Channel); !ok {
		return fmt.Errorf("on-call channel %s is not configured", t.Channel)
	}
	return s.Messages.Page(ctx, tenant, t.Channel, t.Phone, text, id)
}
