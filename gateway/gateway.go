// Package gateway is the HTTP side of the messaging gateway: the v1 API
// (Fiber), the providers' inbound webhooks, health and readiness.
package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/gateway/console"
	"github.com/patientmsg/gateway/internal/admission"
	"github.com/patientmsg/gateway/internal/apikeys"
	"github.com/patientmsg/gateway/internal/audiences"
	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/broadcasts"
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
	"github.com/patientmsg/gateway/internal/replies"
	"github.com/patientmsg/gateway/internal/tenants"
	"github.com/patientmsg/gateway/internal/webhooks"
	"github.com/patientmsg/gateway/templates"
)

// Enqueuer queues tasks (an *asynq.Client).
type Enqueuer = messaging.Enqueuer

// TaskDeleter removes queued tasks (an *asynq.Inspector).
type TaskDeleter = messaging.TaskDeleter

// Options configures the API.
type Options struct {
	// Messages makes messages (required): every message the API or a
	// broadcast or plan it starts makes goes through it.
	Messages *messaging.Service
	Redis    redis.UniversalClient
	Ledger   *ledger.Ledger
	Queue    Enqueuer
	Tasks    TaskDeleter
	Channels *channels.Registry
	// Consent is the consent ledger inbound keywords change (nil: none).
	Consent *consent.Ledger
	// Contacts are the tenants' patients (nil: no contacts API).
	Contacts *contacts.Store
	// Replies is the reply feed (nil: replies are not kept).
	Replies *replies.Store
	// Webhooks are the tenants' endpoints, Events publishes to them (nil: none).
	Webhooks *webhooks.Store
	Events   *webhooks.Publisher
	// Outbound says which URLs a tenant may register for them (its
	// endpoint, a message's callback_url); the zero value: public only.
	Outbound egress.Policy
	// Escalator flags urgent replies and escalates them (nil: none).
	Escalator *escalation.Escalator
	// Recordings is the blob store of call recordings (nil: none).
	Recordings *recordings.Store
	// Tenants holds each tenant's delivery settings (nil: no quiet hours).
	Tenants *tenants.Store
	// Templates are the built-in and tenants' templates (nil: none), rendered
	// with TemplateChain's locale fallbacks.
	Templates     *templates.Store
	TemplateChain templates.Chain
	// DefaultZone is the recipients' time zone when nothing else tells.
	DefaultZone string
	// Inbound is told what the providers' webhooks report (package
	// inbound's Receiver); nil: no webhook routes.
	Inbound channels.Receiver
	// HelpTexts are the tenants' answers to HELP (nil: no help-text API).
	HelpTexts *inbound.HelpTexts
	// Broadcasts stores crisis broadcasts and Broadcast runs them (nil: no
	// broadcasts API).
	Broadcasts *broadcasts.Store
	Broadcast  *broadcasts.Engine
	// Incidents group a crisis's broadcasts (nil: no /v1/incidents).
	Incidents *incidents.Service
	// Followups stores follow-up plans and Plans makes them (nil: no plans
	// API).
	Followups *followups.Store
	Plans     *followups.Planner
	// Questionnaires defines questionnaires and runs their conversations
	// (nil: no questionnaires API).
	Questionnaires *questionnaires.Service
	// Senders are the paced senders GET /v1/senders shows (nil: none).
	Senders *ratelimit.Senders
	// Admission is admission control: tenant request rates, backlog caps
	// and the Redis memory guard (nil: none).
	Admission *admission.Controller
	// Fence waits until a request's writes are on enough Redis replicas
	// before a 2xx is answered (nil: no wait). FailoverWait is how long a
	// message request with an Idempotency-Key waits out a failover and is
	// run again before it is answered 503 (0: at once).
	Fence        Fence
	FailoverWait time.Duration
	// Metrics counts provider webhook requests and their verification
	// (nil: none).
	Metrics *metrics.Metrics
	// APIKeys maps a bootstrap API key (GATEWAY_API_KEYS) → tenant; such
	// a key has every scope.
	APIKeys map[string]string
	// Keys are the managed API keys, with their scopes, and
	// /v1/api-keys manages them (nil: bootstrap keys only).
	Keys *apikeys.Store
	// PublicURL is the base URL providers call; webhook signatures cover it.
	PublicURL       string
	MaxRequestBytes int
	// MaxUploadBytes caps an audience CSV upload (the only larger body).
	MaxUploadBytes int
	// Audiences keeps uploaded recipient lists (nil: no audiences API).
	Audiences *audiences.Store
	// DefaultRegion is the phone region of CSV numbers without a country
	// code ("" requires +country codes).
	DefaultRegion  string
	IdempotencyTTL time.Duration
	MaxAttempts    int
	// AttemptTimeout bounds one send attempt (provider call and ledger writes).
	AttemptTimeout time.Duration
	Logger         *slog.Logger
	// Audit is the audit log the requests that read or change patient
	// data are recorded in (nil: none); GET /v1/audit reads it.
	Audit *audit.Log
	// Erasures erase patients' data on request (nil: no erasure API).
	Erasures *erasure.Service
	// Console is the web console served at /console (nil: none). Its
	// requests pass admission control and the replication fence as the
	// API routes they mirror do.
	Console *console.Console
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Tracer makes a span of each request, webhooks included (nil: no
	// tracing, and no cost).
	Tracer trace.Tracer
}

// Server is the HTTP API.
type Server struct {
	app  *fiber.App
	opts Options
	keys map[[32]byte]string
	log  *slog.Logger
}

// New builds the API and its routes.
func New(o Options) *Server {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Server{opts: o, keys: map[[32]byte]string{}, log: o.Logger.With("comp", "api")}
	for k, tenant := range o.APIKeys {
		s.keys[sha256.Sum256([]byte(k))] = tenant
	}
	s.app = fiber.New(fiber.Config{
		AppName:               "patient-messaging-gateway",
		BodyLimit:             max(o.MaxRequestBytes, o.MaxUploadBytes),
		ErrorHandler:          s.errorHandler,
		DisableStartupMessage: true,
		ReadTimeout:           15 * time.Second,
		WriteTimeout:          15 * time.Second,
		IdleTimeout:           60 * time.Second,
		ReadBufferSize:        8192,
	})
	// Answer "Connection: close" while shutting down.
	s.app.Server().CloseOnShutdown = true
	s.app.Use(s.recover)
	if o.Tracer != nil {
		s.app.Use(s.trace)
	}
	s.app.Use(s.requestID, s.accessLog, s.readBody)
	s.app.Get("/healthz", s.healthz)
	s.app.Get("/readyz", s.readyz)
	s.app.Get("/openapi.yaml", serveOpenAPI)
	v1 := scopedRouter{Router: s.app.Group("/v1", s.auth), s: s, prefix: "/v1"}
	v1.Use(s.admit, s.replicatedWrites, s.auditAPI)
	if o.Audit != nil {
		v1.Get("/audit", s.getAudit)
	}
	if o.Keys != nil {
		v1.Post("/api-keys", s.createKey)
		v1.Get("/api-keys", s.listKeys)
		v1.Post("/api-keys/:id/rotate", s.rotateKey)
		v1.Delete("/api-keys/:id", s.revokeKey)
	}
	v1.Post("/messages", s.createMessage)
	v1.Get("/messages", s.listMessages)
	v1.Get("/messages/:id", s.getMessage)
	v1.Post("/messages/:id/cancel", s.cancelMessage)
	v1.Get("/messages/:id/recording", s.getRecording)
	v1.Get("/settings", s.getSettings)
	v1.Put("/settings", s.putSettings)
	v1.Get("/senders", s.listSenders)
	if o.Audiences != nil {
		v1.Post("/audiences", s.uploadAudience)
		v1.Get("/audiences/:id", s.getAudience)
	}
	if o.Broadcasts != nil && o.Audiences != nil {
		v1.Post("/broadcasts", s.createBroadcast)
		v1.Get("/broadcasts", s.listBroadcasts)
		v1.Post("/broadcasts/preview", s.previewBroadcast)
		v1.Get("/broadcasts/:id", s.getBroadcast)
		v1.Get("/broadcasts/:id/recipients", s.broadcastRecipients)
		v1.Get("/broadcasts/:id/events", s.broadcastEvents)
		v1.Get("/broadcasts/:id/report.csv", s.broadcastReport)
		v1.Post("/broadcasts/:id/cancel", s.cancelBroadcast)
		v1.Post("/broadcasts/:id/repair", s.repairBroadcast)
	}
	if o.Incidents != nil && o.Broadcasts != nil {
		v1.Post("/incidents", s.openIncident)
		v1.Get("/incidents", s.listIncidents)
		v1.Get("/incidents/:id", s.getIncident)
		v1.Post("/incidents/:id/close", s.closeIncident)
	}
	if o.Followups != nil {
		v1.Post("/followups", s.createFollowup)
		v1.Get("/followups/:id", s.getFollowup)
		v1.Post("/followups/:id/cancel", s.cancelFollowup)
	}
	if o.Questionnaires != nil {
		v1.Get("/questionnaires", s.listQuestionnaires)
		v1.Get("/questionnaires/:name", s.getQuestionnaire)
		v1.Put("/questionnaires/:name", s.putQuestionnaire)
		v1.Post("/questionnaires/:name/responses", s.startQuestionnaire)
		v1.Get("/questionnaires/:name/responses", s.listQuestionnaireResponses)
		v1.Get("/questionnaire-responses", s.listPatientResponses)
		v1.Get("/questionnaire-responses/:id", s.getQuestionnaireResponse)
	}
	if o.Questionnaires != nil {
		s.mountForms()
	}
	if o.Templates != nil {
		v1.Get("/templates", s.listTemplates)
		v1.Get("/templates/:name", s.getTemplate)
		v1.Put("/templates/:name", s.putTemplate)
		v1.Delete("/templates/:name", s.deleteTemplate)
		v1.Post("/templates/:name/preview", s.previewTemplate)
	}
	if o.Contacts != nil && o.Consent != nil {
		v1.Get("/contacts", s.findContact)
		v1.Put("/contacts/:id", s.putContact)
		v1.Get("/contacts/:id", s.getContact)
		v1.Get("/contacts/:id/consent", s.getConsent)
		v1.Put("/contacts/:id/consent", s.putConsent)
		v1.Get("/consent/export", s.exportConsent)
		v1.Get("/possible-opt-outs", s.listPossibleOptOuts)
		v1.Post("/possible-opt-outs/:id/resolve", s.resolvePossibleOptOut)
		if o.Replies != nil && o.Ledger != nil {
			v1.Get("/contacts/:id/conversation", s.getConversation)
		}
		if o.Erasures != nil {
			v1.Delete("/contacts", s.eraseIdentity)
			v1.Delete("/contacts/:id", s.eraseContact)
			v1.Get("/erasures/:id", s.getErasure)
		}
	}
	if o.Replies != nil {
		v1.Get("/replies", s.listReplies)
	}
	if o.Escalator != nil {
		v1.Put("/escalation-rules", s.putEscalationRules)
		v1.Get("/escalation-rules", s.getEscalationRules)
		v1.Get("/escalations", s.listEscalations)
		v1.Post("/escalations/:id/ack", s.ackEscalation)
	}
	if o.HelpTexts != nil {
		v1.Put("/help-text", s.putHelpText)
	}
	if o.Webhooks != nil {
		v1.Put("/webhook", s.putWebhook)
		v1.Get("/webhook", s.getWebhook)
		v1.Get("/webhook/dead", s.deadWebhooks)
	}
	if o.Inbound != nil {
		s.mountWebhooks()
		s.mountUnsubscribe()
	}
	if o.Console != nil {
		o.Console.Mount(s.app, s.consoleTenant, s.admit, s.replicatedWrites, s.auditConsole)
	}
	return s
}

// consoleTenant tells admission control the tenant of a signed-in console
// request.
func (s *Server) consoleTenant(c *fiber.Ctx) error {
	c.Locals(tenantKey, console.TenantOf(c))
	return c.Next()
}

// App exposes the Fiber app (for tests: app.Test).
func (s *Server) App() *fiber.App { return s.app }

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.app.Listener(ln) }

// Shutdown stops accepting connections and waits for open requests, up to ctx.
func (s *Server) Shutdown(ctx context.Context) error { return s.app.ShutdownWithContext(ctx) }

// RequestTimeout bounds the storage work of one API request.
const RequestTimeout = 10 * time.Second

// recover turns a panic into a 503 problem, and gives the request a
// context of its own: fasthttp's request context is not safe to derive
// contexts from while the server shuts down.
func (s *Server) recover(c *fiber.Ctx) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), RequestTimeout)
	defer cancel()
	c.SetUserContext(ctx)
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in request handler", "method", c.Method(), "route", c.Route().Path)
			err = writeProblem(c, internalProblem())
		}
	}()
	return c.Next()
}

func (s *Server) accessLog(c *fiber.Ctx) error {
	start := time.Now()
	err := c.Next()
	status := statusOf(c, err)
	lvl := slog.LevelDebug
	if status >= 500 {
		lvl = slog.LevelError
	} else if status >= 400 {
		lvl = slog.LevelInfo
	}
	attrs := []any{"method", c.Method(), "route", c.Route().Path, "status", status, "took", time.Since(start).Round(time.Microsecond)}
	if t, ok := c.Locals(tenantKey).(string); ok {
		attrs = append(attrs, "tenant", t)
	}
	s.log.Log(c.UserContext(), lvl, "http request", attrs...)
	return err
}

type ctxKey int

const tenantKey ctxKey = iota

func tenantOf(c *fiber.Ctx) string { return c.Locals(tenantKey).(string) }

func (s *Server) healthz(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"status": "ok"})
}

func (s *Server) readyz(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(c.UserContext(), time.Second)
	defer cancel()
	if err := s.opts.Redis.Ping(ctx).Err(); err != nil {
		return problem(503, "not-ready", "Redis is not reachable")
	}
	if m := s.redisMemory(ctx); m != nil {
		return c.JSON(fiber.Map{"status": "ready", "redis_memory": m})
	}
	return c.JSON(fiber.Map{"status": "ready"})
}

func hashBody(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
