package gateway

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/apikeys"
)

// routeScopes is the scope each /v1 route needs, by method and route
// template (docs/operations.md lists it): send for what makes or stops
// messages, plans and questionnaire responses, or keeps a patient's
// record; read for reading; broadcast for crisis broadcasts, their
// audiences and incidents; admin for the tenant's settings, webhook,
// escalation rules, template and questionnaire definitions, keys, audit
// log and erasures. A route missing here refuses every key.
var routeScopes = map[string]apikeys.Scope{
	"POST /v1/messages":                       apikeys.Send,
	"GET /v1/messages":                        apikeys.Read,
	"GET /v1/messages/:id":                    apikeys.Read,
	"POST /v1/messages/:id/cancel":            apikeys.Send,
	"GET /v1/messages/:id/recording":          apikeys.Read,
	"GET /v1/settings":                        apikeys.Read,
	"PUT /v1/settings":                        apikeys.Admin,
	"GET /v1/senders":                         apikeys.Read,
	"POST /v1/audiences":                      apikeys.Broadcast,
	"GET /v1/audiences/:id":                   apikeys.Read,
	"POST /v1/broadcasts":                     apikeys.Broadcast,
	"GET /v1/broadcasts":                      apikeys.Read,
	"POST /v1/broadcasts/preview":             apikeys.Broadcast,
	"GET /v1/broadcasts/:id":                  apikeys.Read,
	"GET /v1/broadcasts/:id/recipients":       apikeys.Read,
	"GET /v1/broadcasts/:id/events":           apikeys.Read,
	"GET /v1/broadcasts/:id/report.csv":       apikeys.Read,
	"POST /v1/broadcasts/:id/cancel":          apikeys.Broadcast,
	"POST /v1/broadcasts/:id/repair":          apikeys.Broadcast,
	"POST /v1/incidents":                      apikeys.Broadcast,
	"GET /v1/incidents":                       apikeys.Read,
	"GET /v1/incidents/:id":                   apikeys.Read,
	"POST /v1/incidents/:id/close":            apikeys.Broadcast,
	"POST /v1/followups":                      apikeys.Send,
	"GET /v1/followups/:id":                   apikeys.Read,
	"POST /v1/followups/:id/cancel":           apikeys.Send,
	"GET /v1/questionnaires":                  apikeys.Read,
	"GET /v1/questionnaires/:name":            apikeys.Read,
	"PUT /v1/questionnaires/:name":            apikeys.Admin,
	"POST /v1/questionnaires/:name/responses": apikeys.Send,
	"GET /v1/questionnaires/:name/responses":  apikeys.Read,
	"GET /v1/questionnaire-responses":         apikeys.Read,
	"GET /v1/questionnaire-responses/:id":     apikeys.Read,
	"GET /v1/templates":                       apikeys.Read,
	"GET /v1/templates/:name":                 apikeys.Read,
	"PUT /v1/templates/:name":                 apikeys.Admin,
	"DELETE /v1/templates/:name":              apikeys.Admin,
	"POST /v1/templates/:name/preview":        apikeys.Read,
	"GET /v1/contacts":                        apikeys.Read,
	"PUT /v1/contacts/:id":                    apikeys.Send,
	"GET /v1/contacts/:id":                    apikeys.Read,
	"GET /v1/contacts/:id/consent":            apikeys.Read,
	"PUT /v1/contacts/:id/consent":            apikeys.Send,
	"GET /v1/contacts/:id/conversation":       apikeys.Read,
	"GET /v1/consent/export":                  apikeys.Read,
	"GET /v1/possible-opt-outs":               apikeys.Read,
	"POST /v1/possible-opt-outs/:id/resolve":  apikeys.Send,
	"DELETE /v1/contacts":                     apikeys.Admin,
	"DELETE /v1/contacts/:id":                 apikeys.Admin,
	"GET /v1/erasures/:id":                    apikeys.Admin,
	"GET /v1/replies":                         apikeys.Read,
	"PUT /v1/escalation-rules":                apikeys.Admin,
	"GET /v1/escalation-rules":                apikeys.Read,
	"GET /v1/escalations":                     apikeys.Read,
	"POST /v1/escalations/:id/ack":            apikeys.Send,
	"PUT /v1/help-text":                       apikeys.Admin,
	"PUT /v1/webhook":                         apikeys.Admin,
	"GET /v1/webhook":                         apikeys.Admin,
	"GET /v1/webhook/dead":                    apikeys.Admin,
	"GET /v1/audit":                           apikeys.Admin,
	"POST /v1/api-keys":                       apikeys.Admin,
	"GET /v1/api-keys":                        apikeys.Admin,
	"POST /v1/api-keys/:id/rotate":            apikeys.Admin,
	"DELETE /v1/api-keys/:id":                 apikeys.Admin,
}

const (
	scopesKey ctxKey = 200 + iota // the request key's scopes
	actorKey                      // "apikey:<id>" of a managed key
)

// scopedRouter registers routes that first check the request key's scope
// (routeScopes): every route of the group declares one.
type scopedRouter struct {
	fiber.Router
	s      *Server
	prefix string
}

func (r scopedRouter) scoped(method, path string, handlers []fiber.Handler) []fiber.Handler {
	return append([]fiber.Handler{r.s.requireScope(method + " " + r.prefix + path)}, handlers...)
}

// Get registers a GET (and HEAD) route behind its scope.
func (r scopedRouter) Get(path string, handlers ...fiber.Handler) fiber.Router {
	r.Router.Get(path, r.scoped(fiber.MethodGet, path, handlers)...)
	return r
}

// Post registers a POST route behind its scope.
func (r scopedRouter) Post(path string, handlers ...fiber.Handler) fiber.Router {
	r.Router.Post(path, r.scoped(fiber.MethodPost, path, handlers)...)
	return r
}

// Put registers a PUT route behind its scope.
func (r scopedRouter) Put(path string, handlers ...fiber.Handler) fiber.Router {
	r.Router.Put(path, r.scoped(fiber.MethodPut, path, handlers)...)
	return r
}

// Delete registers a DELETE route behind its scope.
func (r scopedRouter) Delete(path string, handlers ...fiber.Handler) fiber.Router {
	r.Router.Delete(path, r.scoped(fiber.MethodDelete, path, handlers)...)
	return r
}

// requireScope refuses a key without the scope route needs: 403
// insufficient-scope, naming it, with RFC 6750's WWW-Authenticate.
func (s *Server) requireScope(route string) fiber.Handler {
	scope, declared := routeScopes[route]
	if !declared {
		s.log.Error("route declares no scope: every key is refused", "route", route)
		return func(*fiber.Ctx) error {
			return problem(403, "insufficient-scope", "this route declares no scope, so no API key may use it")
		}
	}
	return func(c *fiber.Ctx) error {
		if scopes, _ := c.Locals(scopesKey).([]apikeys.Scope); slices.Contains(scopes, scope) {
			return c.Next()
		}
		c.Set(fiber.HeaderWWWAuthenticate, fmt.Sprintf(`Bearer realm="gateway", error="insufficient_scope", scope="%s"`, scope))
		return problem(403, "insufficient-scope", fmt.Sprintf("this API key lacks the %q scope this route needs", scope))
	}
}

// auth finds the tenant and scopes of the request's key: a bootstrap key
// of GATEWAY_API_KEYS (every scope), or a managed key (Options.Keys).
func (s *Server) auth(c *fiber.Ctx) error {
	h := c.Get(fiber.HeaderAuthorization)
	key, ok := strings.CutPrefix(h, "Bearer ")
	key = strings.TrimSpace(key)
	if !ok || key == "" {
		return problem(401, "unauthorized", "send your API key as 'Authorization: Bearer <key>'")
	}
	if tenant, ok := s.keys[sha256.Sum256([]byte(key))]; ok {
		c.Locals(tenantKey, tenant)
		c.Locals(scopesKey, apikeys.Scopes)
		return c.Next()
	}
	if _, managed := apikeys.ParseID(key); managed && s.opts.Keys != nil {
		k, err := s.opts.Keys.Authenticate(c.UserContext(), key)
		switch {
		case err == nil:
			c.Locals(tenantKey, k.Tenant)
			c.Locals(scopesKey, k.Scopes)
			c.Locals(actorKey, "apikey:"+k.ID)
			return c.Next()
		case !errors.Is(err, apikeys.ErrInvalid):
			return s.unavailable(err)
		}
	}
	return problem(401, "unauthorized", "the API key is not valid (unknown, revoked, or rotated and past its grace)")
}

// madeKey is a key as the answer that made it shows it: with its clear
// form, shown this once.
type madeKey struct {
	apikeys.Key
	Secret string `json:"key"`
	// Previous is the key a rotation replaced, valid until its
	// valid_until.
	Previous *apikeys.Key `json:"previous,omitempty"`
}

func byOf(c *fiber.Ctx) apikeys.By {
	id, _ := c.Locals(requestIDKey).(string)
	return apikeys.By{Actor: apiActor(c), RequestID: id}
}

// createKey answers POST /v1/api-keys: a key of the caller's tenant.
func (s *Server) createKey(c *fiber.Ctx) error {
	var in struct {
		Name   string          `json:"name"`
		Scopes []apikeys.Scope `json:"scopes"`
	}
	if p := decodeJSON(c, &in); p != nil {
		return p
	}
	k, plain, err := s.opts.Keys.Create(c.UserContext(), apikeys.NewKey{Tenant: tenantOf(c), Name: in.Name, Scopes: in.Scopes}, byOf(c))
	if err != nil {
		return s.keyProblem(err)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(201).JSON(madeKey{Key: k, Secret: plain})
}

// listKeys answers GET /v1/api-keys: the tenant's managed keys.
func (s *Server) listKeys(c *fiber.Ctx) error {
	list, err := s.opts.Keys.List(c.UserContext(), tenantOf(c))
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(fiber.Map{"keys": list})
}

// rotateKey answers POST /v1/api-keys/{id}/rotate: a new key in its
// place; the old one works for grace_seconds more (a day by default).
func (s *Server) rotateKey(c *fiber.Ctx) error {
	var in struct {
		GraceSeconds *int64 `json:"grace_seconds"`
	}
	if p := decodeOptionalJSON(c, &in); p != nil {
		return p
	}
	grace := time.Duration(0)
	if in.GraceSeconds != nil {
		most := int64(apikeys.MaxGrace / time.Second)
		if *in.GraceSeconds < 1 || *in.GraceSeconds > most {
			return validationProblem([]FieldError{{Field: "grace_seconds", Detail: fmt.Sprintf("must be a whole number of seconds from 1 to %d (30 days); to stop a key at once, revoke it", most)}})
		}
		grace = time.Duration(*in.GraceSeconds) * time.Second
	}
	k, plain, old, err := s.opts.Keys.Rotate(c.UserContext(), tenantOf(c), c.Params("id"), grace, byOf(c))
	if err != nil {
		return s.keyProblem(err)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(201).JSON(madeKey{Key: k, Secret: plain, Previous: &old})
}

// revokeKey answers DELETE /v1/api-keys/{id}: the key stops working (in
// every API process within seconds); its record stays, listed as revoked.
func (s *Server) revokeKey(c *fiber.Ctx) error {
	k, err := s.opts.Keys.Revoke(c.UserContext(), tenantOf(c), c.Params("id"), byOf(c))
	if err != nil {
		return s.keyProblem(err)
	}
	return c.JSON(k)
}

func (s *Server) keyProblem(err error) error {
	switch {
	case errors.Is(err, apikeys.ErrNotFound):
		return problem(404, "not-found", "no API key with this id for your tenant")
	case errors.Is(err, apikeys.ErrNotActive):
		return problem(409, "key-not-active", "only an active key can be rotated; this one was rotated or revoked already")
	}
	return s.domainProblem(err)
}
