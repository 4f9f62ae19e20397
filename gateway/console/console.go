// Package console is the gateway's web console at /console, for the
// people of a tenant: crisis leads compose and send broadcasts and watch
// their rosters live, staff work the reply inbox, answer patients from
// their conversation and acknowledge escalations, anyone signed in follows a message through the message
// log, viewers read. It is HTTP only: server-rendered html/template
// pages, htmx kept in the repository, static files embedded in the binary.
// Accounts, sessions and roles are package users'; every action calls the
// same domain function as the API route it mirrors.
package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/internal/audiences"
	"github.com/patientmsg/gateway/internal/broadcasts"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/escalation"
	"github.com/patientmsg/gateway/internal/followups"
	"github.com/patientmsg/gateway/internal/incidents"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/questionnaires"
	"github.com/patientmsg/gateway/internal/ratelimit"
	"github.com/patientmsg/gateway/internal/replies"
	"github.com/patientmsg/gateway/internal/tenants"
	"github.com/patientmsg/gateway/internal/users"
	"github.com/patientmsg/gateway/internal/webhooks"
	"github.com/patientmsg/gateway/templates"
)

//go:embed static templates i18n
var files embed.FS

// Prefix is where the console is served.
const Prefix = "/console"

// Owns reports whether a request path is the console's.
func Owns(p string) bool { return p == Prefix || strings.HasPrefix(p, Prefix+"/") }

// Settings gives a tenant's settings (its time zone); messaging.Service.
type Settings interface {
	SettingsOf(ctx context.Context, tenant string) (tenants.Settings, error)
}

// Queues reads the task queues' depths; *asynq.Inspector.
type Queues interface {
	Queues() ([]string, error)
	GetQueueInfo(queue string) (*asynq.QueueInfo, error)
}

// Options are the domain objects the console calls.
type Options struct {
	Users      *users.Store
	Broadcasts *broadcasts.Store
	Broadcast  *broadcasts.Engine
	Audiences  *audiences.Store
	Escalator  *escalation.Escalator
	Replies    *replies.Store
	Ledger     *ledger.Ledger
	Settings   Settings
	Contacts   *contacts.Store
	Consent    *consent.Ledger
	// Messages makes staff's answers to patients, as POST /v1/messages
	// does; IdempotencyTTL is how long an answer form's key is kept (a
	// day when zero).
	Messages       *messaging.Service
	IdempotencyTTL time.Duration
	// Events tells the tenant's webhook of a consent recorded here (nil:
	// no webhooks).
	Events *webhooks.Publisher
	// Incidents group a crisis's broadcasts (nil: no incidents pages).
	Incidents *incidents.Service
	// Questionnaires are the questionnaires and their responses (nil: no
	// questionnaires pages).
	Questionnaires *questionnaires.Service
	// Templates are the built-in and tenants' templates (nil: no
	// templates pages); previews are made by Messages, as the API's.
	Templates *templates.Store
	// Followups keeps the follow-up plans; Plans cancels them and reads
	// their steps' messages, as the API does.
	Followups *followups.Store
	Plans     *followups.Planner
	// Senders are the paced senders the senders page shows (nil: none).
	Senders *ratelimit.Senders
	// Queues are the task queues whose depths it shows (nil: not shown).
	Queues Queues
	// DefaultRegion is the phone region of CSV numbers without a country
	// code; MaxUploadBytes caps an audience CSV.
	DefaultRegion  string
	MaxUploadBytes int
	// Secure marks the cookies Secure (and names them with the __Host-
	// prefix). Off only when the gateway is reached over plain HTTP on a
	// loopback address (dev, tests).
	Secure bool
	// LiveEvery is the least time between two updates of a live roster
	// (500 ms: at most two a second).
	LiveEvery time.Duration
	// LiveFor is how long one connection of a live roster lasts before
	// the browser reconnects (10 s; the server's write timeout is 15 s).
	LiveFor time.Duration
	Logger  *slog.Logger
}

// Console serves the console's pages.
type Console struct {
	opts  Options
	log   *slog.Logger
	pages map[string]map[string]*pageTemplate // locale → page → template
}

// New builds the console; it fails when its templates or catalogues do.
func New(o Options) (*Console, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.LiveEvery <= 0 {
		o.LiveEvery = 500 * time.Millisecond
	}
	if o.LiveFor <= 0 {
		o.LiveFor = 10 * time.Second
	}
	c := &Console{opts: o, log: o.Logger.With("comp", "console")}
	var err error
	if c.pages, err = loadPages(); err != nil {
		return nil, err
	}
	return c, nil
}

// Cookie names; with Secure, the __Host- prefix binds them to this host
// and path "/" (a sibling subdomain cannot set them).
func (c *Console) sessionCookie() string { return c.cookieName("gw_session") }
func (c *Console) signinCookie() string  { return c.cookieName("gw_signin") }
func (c *Console) cookieName(n string) string {
	if c.opts.Secure {
		return "__Host-" + n
	}
	return n
}

// Mount adds the console's routes to the app. guard runs after a request
// is authenticated and its CSRF token checked, before the handler (the
// gateway's admission control and replication fence); TenantOf tells it
// the tenant.
func (c *Console) Mount(app fiber.Router, guard ...fiber.Handler) {
	app.Use(Prefix, c.headers, c.recover)
	app.Get(Prefix+"/static/:file", c.static)
	app.Get(Prefix+"/signin", c.signinPage)
	app.Post(Prefix+"/signin", c.signin)
	app.Get(Prefix, c.home)
	app.Get(Prefix+"/", c.home)
	read := func(h fiber.Handler) []fiber.Handler { return append(append([]fiber.Handler{c.auth}, guard...), h) }
	write := func(p users.Permission, h fiber.Handler) []fiber.Handler {
		chain := []fiber.Handler{c.auth, c.csrf}
		if p != 0 {
			chain = append(chain, c.need(p))
		}
		return append(append(chain, guard...), h)
	}
	app.Post(Prefix+"/signout", write(0, c.signout)...)
	app.Get(Prefix+"/broadcasts", read(c.broadcastsPage)...)
	app.Get(Prefix+"/broadcasts/new", read(c.composePage)...)
	app.Post(Prefix+"/broadcasts/new", write(users.SendBroadcasts, c.composeAgain)...)
	app.Post(Prefix+"/audiences", write(users.SendBroadcasts, c.uploadAudience)...)
	app.Post(Prefix+"/broadcasts/preview", write(users.SendBroadcasts, c.preview)...)
	app.Post(Prefix+"/broadcasts", write(users.SendBroadcasts, c.send)...)
	app.Get(Prefix+"/broadcasts/:id", read(c.rosterPage)...)
	app.Get(Prefix+"/broadcasts/:id/live", read(c.live)...)
	app.Get(Prefix+"/broadcasts/:id/report.csv", read(c.report)...)
	app.Get(Prefix+"/broadcasts/:id/report", read(c.reportPage)...)
	app.Post(Prefix+"/broadcasts/:id/cancel", write(users.SendBroadcasts, c.cancel)...)
	app.Get(Prefix+"/escalations", read(c.escalationsPage)...)
	app.Post(Prefix+"/escalations/:id/ack", write(users.AcknowledgeEscalations, c.ack)...)
	app.Get(Prefix+"/inbox", read(c.inboxPage)...)
	app.Get(Prefix+"/messages", read(c.messagesPage)...)
	app.Get(Prefix+"/messages/:id", read(c.messagePage)...)
	app.Get(Prefix+"/contacts", read(c.contactsPage)...)
	app.Get(Prefix+"/contacts/:id", read(c.contactPage)...)
	app.Post(Prefix+"/contacts/:id/consent", write(users.RecordConsent, c.recordOptIn)...)
	app.Get(Prefix+"/contacts/:id/conversation", read(c.conversationPage)...)
	app.Post(Prefix+"/contacts/:id/conversation", write(users.AnswerPatients, c.answer)...)
	app.Get(Prefix+"/senders", read(c.sendersPage)...)
	app.Get(Prefix+"/opt-outs", read(c.optOutsPage)...)
	app.Post(Prefix+"/opt-outs/:id/resolve", write(users.RecordConsent, c.resolveOptOut)...)
	if c.opts.Incidents != nil {
		app.Get(Prefix+"/incidents", read(c.incidentsPage)...)
		app.Post(Prefix+"/incidents", write(users.SendBroadcasts, c.openIncident)...)
		app.Get(Prefix+"/incidents/:id", read(c.incidentPage)...)
		app.Get(Prefix+"/incidents/:id/report", read(c.incidentReportPage)...)
		app.Post(Prefix+"/incidents/:id/close", write(users.SendBroadcasts, c.closeIncident)...)
	}
	if c.opts.Questionnaires != nil {
		app.Get(Prefix+"/questionnaires", read(c.questionnairesPage)...)
		app.Get(Prefix+"/questionnaires/:name", read(c.questionnairePage)...)
		app.Get(Prefix+"/questionnaire-responses", read(c.historyPage)...)
		app.Get(Prefix+"/questionnaire-responses/:id", read(c.responsePage)...)
	}
	app.Get(Prefix+"/templates", read(c.templatesPage)...)
	app.Get(Prefix+"/templates/:name", read(c.templatePage)...)
	app.Post(Prefix+"/templates/:name/preview", write(0, c.previewTemplate)...)
	app.Post(Prefix+"/templates/:name", write(users.EditTemplates, c.saveTemplate)...)
	app.Get(Prefix+"/plans", read(c.plansPage)...)
	app.Get(Prefix+"/plans/:id", read(c.planPage)...)
	app.Post(Prefix+"/plans/:id/cancel", write(users.CancelPlans, c.cancelPlan)...)
	app.Use(Prefix, func(*fiber.Ctx) error { return notFound() })
}

// IsUpload reports whether a request is the console's audience upload,
// which takes an upload's body limit.
func IsUpload(method, p string) bool { return method == fiber.MethodPost && p == Prefix+"/audiences" }

type localKey int

const (
	userKey localKey = iota
	sessionKey
)

// TenantOf is the tenant of an authenticated console request.
func TenantOf(c *fiber.Ctx) string {
	if u, ok := c.Locals(userKey).(*users.User); ok {
		return u.Tenant
	}
	return ""
}

// UserIDOf is the account id of an authenticated console request.
func UserIDOf(c *fiber.Ctx) string {
	if u, ok := c.Locals(userKey).(*users.User); ok {
		return u.ID
	}
	return ""
}

func userOf(c *fiber.Ctx) *users.User       { return c.Locals(userKey).(*users.User) }
func sessionOf(c *fiber.Ctx) *users.Session { return c.Locals(sessionKey).(*users.Session) }

// contentSecurityPolicy allows the console's own scripts, styles, images
// and connections only: no inline script or style, no framing, forms post
// only here.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// setHeaders sets the security headers every console answer carries.
func setHeaders(c *fiber.Ctx) {
	c.Set("Content-Security-Policy", contentSecurityPolicy)
	c.Set("X-Content-Type-Options", "nosniff")
	c.Set("Referrer-Policy", "no-referrer")
	c.Set("X-Frame-Options", "DENY")
	c.Set("Cross-Origin-Opener-Policy", "same-origin")
	c.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
}

func (c *Console) headers(ctx *fiber.Ctx) error {
	setHeaders(ctx)
	if !strings.HasPrefix(ctx.Path(), Prefix+"/static/") {
		// Pages hold patients' data: never kept by the browser or a proxy.
		ctx.Set(fiber.HeaderCacheControl, "no-store")
	}
	return ctx.Next()
}

// recover answers a panic with the console's error page.
func (c *Console) recover(ctx *fiber.Ctx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("panic in console handler", "method", ctx.Method(), "route", ctx.Route().Path)
			err = &StatusError{Status: http.StatusServiceUnavailable}
		}
	}()
	return ctx.Next()
}

// StatusError is an error the console answers with its status and an
// explanation (Detail, in English, from the gateway; or Key, a catalogue
// entry).
type StatusError struct {
	Status     int
	Detail     string
	Key        string
	RetryAfter time.Duration
}

func (e *StatusError) Error() string { return fmt.Sprintf("%d %s%s", e.Status, e.Key, e.Detail) }

func notFound() error  { return &StatusError{Status: http.StatusNotFound, Key: "error.not_found"} }
func forbidden() error { return &StatusError{Status: http.StatusForbidden, Key: "error.forbidden"} }

// HandleError answers an error of a console request with an HTML page:
// its status, and what to do.
func (c *Console) HandleError(ctx *fiber.Ctx, err error) error {
	se := &StatusError{}
	var fe *fiber.Error
	switch {
	case errors.As(err, &se):
	case errors.As(err, &fe):
		se = &StatusError{Status: fe.Code}
		if fe.Code >= 500 {
			se.Status = http.StatusServiceUnavailable
		}
	default:
		c.log.Error("console request failed", "method", ctx.Method(), "route", ctx.Route().Path, "err", err)
		se = &StatusError{Status: http.StatusServiceUnavailable, Key: "error.unavailable"}
	}
	if se.Key == "" && se.Detail == "" {
		switch se.Status {
		case http.StatusNotFound:
			se.Key = "error.not_found"
		case http.StatusForbidden:
			se.Key = "error.forbidden"
		case http.StatusRequestEntityTooLarge:
			se.Key = "error.too_large"
		default:
			se.Key = "error.unavailable"
		}
	}
	if se.Status == http.StatusServiceUnavailable || se.Status == http.StatusTooManyRequests {
		ra := se.RetryAfter
		if ra <= 0 {
			ra = 5 * time.Second
		}
		ctx.Set(fiber.HeaderRetryAfter, strconv.Itoa(int((ra+time.Second-1)/time.Second)))
	}
	setHeaders(ctx)
	ctx.Set(fiber.HeaderCacheControl, "no-store")
	u, _ := ctx.Locals(userKey).(*users.User)
	return c.render(ctx, se.Status, "error", pageData{Title: "error.title", User: u, Data: se})
}

// static serves the embedded scripts and stylesheet.
func (c *Console) static(ctx *fiber.Ctx) error {
	name := path.Base(ctx.Params("file"))
	b, err := fs.ReadFile(files, "static/"+name)
	if err != nil || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".md") {
		return notFound()
	}
	ctx.Set(fiber.HeaderContentType, mime.TypeByExtension(path.Ext(name)))
	ctx.Set(fiber.HeaderCacheControl, "public, max-age=3600")
	return ctx.Send(b)
}

func (c *Console) home(ctx *fiber.Ctx) error {
	return ctx.Redirect(Prefix+"/broadcasts", http.StatusSeeOther)
}

// auth finds the request's session; without one a page asks to sign in.
func (c *Console) auth(ctx *fiber.Ctx) error {
	u, sess, err := c.opts.Users.Authenticate(ctx.UserContext(), ctx.Cookies(c.sessionCookie()))
	if errors.Is(err, users.ErrNoSession) {
		c.clearCookie(ctx, c.sessionCookie())
		switch {
		case strings.Contains(ctx.Get(fiber.HeaderAccept), "text/event-stream"):
			return ctx.SendStatus(http.StatusUnauthorized)
		case ctx.Get("HX-Request") != "":
			ctx.Set("HX-Redirect", Prefix+"/signin")
			return ctx.SendStatus(http.StatusUnauthorized)
		case ctx.Method() == fiber.MethodGet:
			return ctx.Redirect(Prefix+"/signin?next="+url.QueryEscape(string(ctx.Request().URI().RequestURI())), http.StatusSeeOther)
		}
		return ctx.Redirect(Prefix+"/signin?expired=1", http.StatusSeeOther)
	}
	if err != nil {
		return err
	}
	ctx.Locals(userKey, u)
	ctx.Locals(sessionKey, sess)
	return ctx.Next()
}

// csrf refuses a form without the session's CSRF token (403).
func (c *Console) csrf(ctx *fiber.Ctx) error {
	token := ctx.FormValue("csrf")
	if token == "" {
		token = ctx.Get("X-CSRF-Token")
	}
	if !sessionOf(ctx).CheckCSRF(token) {
		return &StatusError{Status: http.StatusForbidden, Key: "error.csrf"}
	}
	return ctx.Next()
}

// need refuses a request whose account's role lacks p (403).
func (c *Console) need(p users.Permission) fiber.Handler {
	return func(ctx *fiber.Ctx) error {
		if !userOf(ctx).Role.Can(p) {
			return forbidden()
		}
		return ctx.Next()
	}
}

func (c *Console) setCookie(ctx *fiber.Ctx, name, value string, maxAge time.Duration) {
	ctx.Cookie(&fiber.Cookie{Name: name, Value: value, Path: "/", HTTPOnly: true, Secure: c.opts.Secure,
		SameSite: fiber.CookieSameSiteStrictMode, MaxAge: int(maxAge / time.Second)})
}

func (c *Console) clearCookie(ctx *fiber.Ctx, name string) {
	if ctx.Cookies(name) == "" {
		return
	}
	ctx.Cookie(&fiber.Cookie{Name: name, Value: "", Path: "/", HTTPOnly: true, Secure: c.opts.Secure,
		SameSite: fiber.CookieSameSiteStrictMode, MaxAge: -1, Expires: time.Unix(1, 0)})
}

// render executes a page in the account's language (the browser's before
// sign-in) and sends it.
func (c *Console) render(ctx *fiber.Ctx, status int, page string, d pageData) error {
	locale := "en"
	if d.User != nil {
		locale = d.User.Locale
	} else {
		locale = browserLocale(ctx.Get(fiber.HeaderAcceptLanguage))
	}
	set, ok := c.pages[locale]
	if !ok {
		set = c.pages["en"]
	}
	t := set[page]
	if t == nil {
		return fmt.Errorf("console: no page %q", page)
	}
	d.Lang = locale
	if sess, ok := ctx.Locals(sessionKey).(*users.Session); ok {
		d.CSRF = sess.CSRF
	}
	if d.Zone == nil {
		d.Zone = time.UTC
		if d.User != nil {
			d.Zone = c.zoneOf(ctx.UserContext(), d.User.Tenant)
		}
	}
	var b bytes.Buffer
	if err := t.execute(&b, d); err != nil {
		return err
	}
	ctx.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return ctx.Status(status).Send(b.Bytes())
}

// browserLocale picks the console's language from Accept-Language.
func browserLocale(header string) string {
	for _, part := range strings.Split(header, ",") {
		tag, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		tag = strings.ToLower(tag)
		switch {
		case strings.HasPrefix(tag, "zh"):
			return "zh-Hans"
		case strings.HasPrefix(tag, "en"):
			return "en"
		}
	}
	return "en"
}
