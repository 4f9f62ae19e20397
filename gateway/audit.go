package gateway

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/gateway/console"
	"github.com/patientmsg/gateway/internal/audit"
)

// audited names what a route does to patient data: the event's action,
// and where its object id comes from — a path parameter (object "kind:"
// + the parameter), or the "id" of the JSON answer (a resource the
// request made). Routes absent from the table touch no patient data (the
// senders' pace, templates, health) and are not audited.
type audited struct {
	action string
	kind   string // the object's kind: "message", "contact"…
	param  string // the path parameter holding its id ("" for none)
	made   bool   // the id is the answer's "id"
}

// apiAudit is the /v1 routes' table, keyed by method and route template.
var apiAudit = map[string]audited{
	"POST /v1/messages":                       {action: "message.create", kind: "message", made: true},
	"GET /v1/messages":                        {action: "message.list"},
	"GET /v1/messages/:id":                    {action: "message.read", kind: "message", param: "id"},
	"POST /v1/messages/:id/cancel":            {action: "message.cancel", kind: "message", param: "id"},
	"GET /v1/messages/:id/recording":          {action: "recording.read", kind: "message", param: "id"},
	"PUT /v1/settings":                        {action: "settings.change"},
	"POST /v1/audiences":                      {action: "audience.create", kind: "audience", made: true},
	"GET /v1/audiences/:id":                   {action: "audience.read", kind: "audience", param: "id"},
	"POST /v1/broadcasts":                     {action: "broadcast.create", kind: "broadcast", made: true},
	"GET /v1/broadcasts/:id":                  {action: "broadcast.read", kind: "broadcast", param: "id"},
	"GET /v1/broadcasts/:id/recipients":       {action: "broadcast.recipients.read", kind: "broadcast", param: "id"},
	"GET /v1/broadcasts/:id/events":           {action: "broadcast.events.read", kind: "broadcast", param: "id"},
	"GET /v1/broadcasts/:id/report.csv":       {action: "broadcast.report.read", kind: "broadcast", param: "id"},
	"POST /v1/broadcasts/:id/cancel":          {action: "broadcast.cancel", kind: "broadcast", param: "id"},
	"POST /v1/broadcasts/:id/repair":          {action: "broadcast.repair", kind: "broadcast", param: "id"},
	"POST /v1/followups":                      {action: "followup.create", kind: "followup", made: true},
	"GET /v1/followups/:id":                   {action: "followup.read", kind: "followup", param: "id"},
	"POST /v1/followups/:id/cancel":           {action: "followup.cancel", kind: "followup", param: "id"},
	"POST /v1/questionnaires/:name/responses": {action: "questionnaire_response.create", kind: "questionnaire_response", made: true},
	"GET /v1/questionnaires/:name/responses":  {action: "questionnaire_response.list", kind: "questionnaire", param: "name"},
	"GET /v1/questionnaire-responses":         {action: "questionnaire_response.list"},
	"GET /v1/questionnaire-responses/:id":     {action: "questionnaire_response.read", kind: "questionnaire_response", param: "id"},
	"GET /v1/contacts":                        {action: "contact.find"},
	"PUT /v1/contacts/:id":                    {action: "contact.change", kind: "contact", param: "id"},
	"GET /v1/contacts/:id":                    {action: "contact.read", kind: "contact", param: "id"},
	"DELETE /v1/contacts/:id":                 {action: "contact.erase", kind: "contact", param: "id"},
	"DELETE /v1/contacts":                     {action: "contact.erase", kind: "erasure", made: true},
	"GET /v1/erasures/:id":                    {action: "erasure.read", kind: "erasure", param: "id"},
	"GET /v1/contacts/:id/consent":            {action: "consent.read", kind: "contact", param: "id"},
	"PUT /v1/contacts/:id/consent":            {action: audit.ActionConsentChange, kind: "contact", param: "id"},
	"GET /v1/contacts/:id/conversation":       {action: "conversation.read", kind: "contact", param: "id"},
	"GET /v1/consent/export":                  {action: "consent.export"},
	"GET /v1/possible-opt-outs":               {action: "possible_opt_out.list"},
	"POST /v1/possible-opt-outs/:id/resolve":  {action: "possible_opt_out.resolve", kind: "possible_opt_out", param: "id"},
	"GET /v1/replies":                         {action: "reply.list"},
	"GET /v1/escalations":                     {action: "escalation.list"},
	"POST /v1/escalations/:id/ack":            {action: "escalation.ack", kind: "escalation", param: "id"},
	"PUT /v1/escalation-rules":                {action: "escalation_rules.change"},
	"PUT /v1/webhook":                         {action: "webhook.change"},
	"GET /v1/audit":                           {action: "audit.read"},
}

// consoleAudit is the console's table: its pages show the same data.
var consoleAudit = map[string]audited{
	"POST " + console.Prefix + "/broadcasts":                 {action: "broadcast.create"},
	"POST " + console.Prefix + "/audiences":                  {action: "audience.create"},
	"GET " + console.Prefix + "/broadcasts/:id":              {action: "broadcast.recipients.read", kind: "broadcast", param: "id"},
	"GET " + console.Prefix + "/broadcasts/:id/report.csv":   {action: "broadcast.report.read", kind: "broadcast", param: "id"},
	"GET " + console.Prefix + "/broadcasts/:id/report":       {action: "broadcast.report.read", kind: "broadcast", param: "id"},
	"POST " + console.Prefix + "/broadcasts/:id/cancel":      {action: "broadcast.cancel", kind: "broadcast", param: "id"},
	"GET " + console.Prefix + "/escalations":                 {action: "escalation.list"},
	"POST " + console.Prefix + "/escalations/:id/ack":        {action: "escalation.ack", kind: "escalation", param: "id"},
	"GET " + console.Prefix + "/inbox":                       {action: "reply.list"},
	"GET " + console.Prefix + "/messages":                    {action: "message.list"},
	"GET " + console.Prefix + "/messages/:id":                {action: "message.read", kind: "message", param: "id"},
	"GET " + console.Prefix + "/contacts":                    {action: "contact.find"},
	"GET " + console.Prefix + "/contacts/:id":                {action: "contact.read", kind: "contact", param: "id"},
	"POST " + console.Prefix + "/contacts/:id/consent":       {action: audit.ActionConsentChange, kind: "contact", param: "id"},
	"GET " + console.Prefix + "/contacts/:id/conversation":   {action: "conversation.read", kind: "contact", param: "id"},
	"POST " + console.Prefix + "/contacts/:id/conversation":  {action: "message.create", kind: "contact", param: "id"},
	"GET " + console.Prefix + "/opt-outs":                    {action: "possible_opt_out.list"},
	"POST " + console.Prefix + "/opt-outs/:id/resolve":       {action: "possible_opt_out.resolve", kind: "possible_opt_out", param: "id"},
	"GET " + console.Prefix + "/questionnaires/:name":        {action: "questionnaire_response.list", kind: "questionnaire", param: "name"},
	"GET " + console.Prefix + "/questionnaire-responses":     {action: "questionnaire_response.list"},
	"GET " + console.Prefix + "/questionnaire-responses/:id": {action: "questionnaire_response.read", kind: "questionnaire_response", param: "id"},
	"GET " + console.Prefix + "/plans/:id":                   {action: "followup.read", kind: "followup", param: "id"},
	"POST " + console.Prefix + "/plans/:id/cancel":           {action: "followup.cancel", kind: "followup", param: "id"},
}

// HeaderRequestID carries a request's id, the one its audit events name:
// the caller's, when it is a short id, or one the gateway makes.
const HeaderRequestID = "X-Request-Id"

const requestIDKey ctxKey = 100

// requestID gives every request an id and answers it.
func (s *Server) requestID(c *fiber.Ctx) error {
	id := c.Get(HeaderRequestID)
	if len(id) == 0 || len(id) > 64 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		id = hex.EncodeToString(b)
	}
	c.Locals(requestIDKey, id)
	c.Set(HeaderRequestID, id)
	return c.Next()
}

// apiActor is the API key of a request as its audit events name it: a
// managed key's id, or a bootstrap key's fingerprint (the first 16 hex
// digits of its SHA-256); never the key.
func apiActor(c *fiber.Ctx) string {
	if actor, ok := c.Locals(actorKey).(string); ok {
		return actor
	}
	key, _ := strings.CutPrefix(c.Get(fiber.HeaderAuthorization), "Bearer ")
	sum := sha256.Sum256([]byte(strings.TrimSpace(key)))
	return "apikey:" + hex.EncodeToString(sum[:8])
}

// auditAPI records the /v1 requests that read or change patient data.
func (s *Server) auditAPI(c *fiber.Ctx) error {
	return s.audit(c, apiAudit, tenantOf(c), apiActor(c), func(status int) error {
		return writeProblem(c, problem(status, "audit-unavailable", "the audit log cannot record this read of patient data; try again shortly"))
	})
}

// auditConsole records the console's requests that read or change
// patient data.
func (s *Server) auditConsole(c *fiber.Ctx) error {
	return s.audit(c, consoleAudit, console.TenantOf(c), "user:"+console.UserIDOf(c), func(status int) error {
		return &console.StatusError{Status: status}
	})
}

// audit runs the request and appends its event. A read of patient data
// that cannot be recorded is not answered (fail closed: 503, its body
// dropped); a change already made is answered as it went, and the
// missing event is logged as an error and counted (audit.Log.Failures).
func (s *Server) audit(c *fiber.Ctx, table map[string]audited, tenant, actor string, refuse func(int) error) error {
	if s.opts.Audit == nil {
		return c.Next()
	}
	err := c.Next()
	a, ok := table[c.Method()+" "+c.Route().Path]
	if !ok || tenant == "" {
		return err
	}
	status := statusOf(c, err)
	if refusedUnread(status, err) {
		// Admission control refused it before anything was read or
		// changed: a flood of those must not fill Redis with events.
		return err
	}
	e := audit.Event{Tenant: tenant, Actor: actor, Action: a.action, Status: status, Outcome: audit.OK}
	e.RequestID, _ = c.Locals(requestIDKey).(string)
	switch {
	case status >= 500:
		e.Outcome = audit.Error
	case status >= 400:
		e.Outcome = audit.Denied
	}
	switch {
	case a.param != "":
		e.Object = a.kind + ":" + c.Params(a.param)
	case a.made && e.Outcome == audit.OK:
		var made struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(c.Response().Body(), &made) == nil && made.ID != "" {
			e.Object = a.kind + ":" + made.ID
		}
	}
	if e.Check() != nil {
		e.Object = a.kind + ":invalid-id" // a path parameter no id has: the request was refused
	}
	if _, aerr := s.opts.Audit.Append(c.UserContext(), e); aerr != nil {
		s.log.Error("audit event not recorded", "tenant", tenant, "action", e.Action, "route", c.Route().Path, "err", aerr)
		if c.Method() == fiber.MethodGet && e.Outcome == audit.OK {
			c.Response().ResetBody()
			return refuse(http.StatusServiceUnavailable)
		}
	}
	return err
}

// statusOf is the status a request is answered with, once err (the
// handler's) is turned into its answer.
func statusOf(c *fiber.Ctx, err error) int {
	if err == nil {
		return c.Response().StatusCode()
	}
	var p *Problem
	var fe *fiber.Error
	var se *console.StatusError
	switch {
	case errors.As(err, &p):
		return p.Status
	case errors.As(err, &fe):
		return fe.Code
	case errors.As(err, &se):
		return se.Status
	}
	return 500
}

// getAudit answers GET /v1/audit: the tenant's own audit events, in time
// order, filtered by since, until (RFC 3339), action and limit (1–1000).
func (s *Server) getAudit(c *fiber.Ctx) error {
	var q audit.Query
	var errs []FieldError
	for _, name := range queryTimes(c, &q.Since, &q.Until) {
		errs = append(errs, FieldError{Field: name, Detail: rfc3339Rule})
	}
	q.Action = c.Query("action")
	if len(q.Action) > 64 || strings.Trim(q.Action, "abcdefghijklmnopqrstuvwxyz._") != "" {
		errs = append(errs, FieldError{Field: "action", Detail: "must be an action such as message.read"})
	}
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > audit.MaxLimit {
			errs = append(errs, FieldError{Field: "limit", Detail: "must be a whole number from 1 to " + strconv.Itoa(audit.MaxLimit)})
		}
		q.Limit = n
	}
	if len(errs) > 0 {
		return validationProblem(errs)
	}
	events, more, err := s.opts.Audit.Find(c.UserContext(), tenantOf(c), q)
	if err != nil {
		return err
	}
	if events == nil {
		events = []audit.Event{}
	}
	return c.JSON(fiber.Map{"events": events, "more": more})
}

// refusedUnread says whether a request was refused before it reached any
// data: over its tenant's rate (429) or with the store full (503
// store-full). Such answers are not audited; they are counted by the
// admission metrics.
func refusedUnread(status int, err error) bool {
	if status == http.StatusTooManyRequests {
		return true
	}
	var p *Problem
	return status == http.StatusServiceUnavailable && errors.As(err, &p) && strings.HasSuffix(p.Type, "/store-full")
}
