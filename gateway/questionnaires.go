package gateway

import (
	"encoding/csv"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/invalid"
	"github.com/patientmsg/gateway/internal/questionnaires"
	"github.com/patientmsg/gateway/internal/redact"
	"github.com/patientmsg/gateway/internal/spreadsheet"
)

// PUT /v1/questionnaires/{name}: defines a questionnaire, or a new version
// of it when it changed (201; 200 when it is the same as the latest).
func (s *Server) putQuestionnaire(c *fiber.Ctx) error {
	var in questionnaires.Spec
	if p := decodeJSON(c, &in); p != nil {
		return p
	}
	def, created, err := s.opts.Questionnaires.Put(c.UserContext(), tenantOf(c), c.Params("name"), in)
	if err != nil {
		return s.domainProblem(err)
	}
	if created {
		c.Status(fiber.StatusCreated)
	}
	return c.JSON(def)
}

// GET /v1/questionnaires: the latest version of each, built-in ones included.
func (s *Server) listQuestionnaires(c *fiber.Ctx) error {
	list, err := s.opts.Questionnaires.List(c.UserContext(), tenantOf(c))
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(fiber.Map{"questionnaires": list})
}

// GET /v1/questionnaires/{name}?version=
func (s *Server) getQuestionnaire(c *fiber.Ctx) error {
	v := 0
	if q := c.Query("version"); q != "" {
		n, err := strconv.Atoi(q)
		if err != nil || n < 1 {
			return problem(400, "bad-query", "version must be a positive whole number")
		}
		v = n
	}
	def, err := s.opts.Questionnaires.Definition(c.UserContext(), tenantOf(c), c.Params("name"), v)
	if errors.Is(err, questionnaires.ErrNotFound) {
		return problem(404, "not-found", "no questionnaire (or version) of this name for your API key")
	}
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(def)
}

// POST /v1/questionnaires/{name}/responses: sends the first question.
func (s *Server) startQuestionnaire(c *fiber.Ctx) error {
	body, p := jsonBody(c)
	if p != nil {
		return p
	}
	idemKey := c.Get("Idempotency-Key")
	if len(idemKey) > MaxIdempotencyKey {
		return problem(400, "bad-idempotency-key", "Idempotency-Key is longer than 255 characters")
	}
	var in questionnaires.StartRequest
	if p := decodeStrict(body, &in); p != nil {
		return p
	}
	r, replayed, err := s.opts.Questionnaires.Start(c.UserContext(), tenantOf(c), c.Params("name"), &in,
		questionnaires.Idempotency{Key: idemKey, BodyHash: hashBody(body), TTL: s.opts.IdempotencyTTL})
	switch {
	case errors.Is(err, questionnaires.ErrNotFound):
		return problem(404, "not-found", "no questionnaire of this name for your API key")
	case errors.Is(err, questionnaires.ErrAlreadyOpen):
		return problem(409, "questionnaire-in-progress", "this questionnaire is already in progress for this address; wait for it to end")
	case errors.Is(err, questionnaires.ErrIdempotencyMismatch):
		return problem(422, "idempotency-mismatch", "this Idempotency-Key was already used with a different request body; use a new key for a new response")
	case err != nil:
		return s.domainProblem(err)
	}
	if replayed {
		c.Set("Idempotent-Replayed", "true")
		return c.JSON(responseView(r))
	}
	return c.Status(fiber.StatusCreated).JSON(responseView(r))
}

// GET /v1/questionnaire-responses/{id}
func (s *Server) getQuestionnaireResponse(c *fiber.Ctx) error {
	r, err := s.opts.Questionnaires.GetResponse(c.UserContext(), tenantOf(c), c.Params("id"))
	if errors.Is(err, questionnaires.ErrResponseNotFound) {
		return problem(404, "not-found", "no questionnaire response with this id for your API key")
	}
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(responseView(r))
}

// GET /v1/questionnaires/{name}/responses?limit=&before=&format=csv, with
// the filters of responseFilter.
func (s *Server) listQuestionnaireResponses(c *fiber.Ctx) error {
	limit, err := queryLimit(c, 100, questionnaires.MaxList)
	if err != nil {
		return err
	}
	f, p := s.responseFilter(c, c.Params("name"))
	if p != nil {
		return p
	}
	page, err := s.opts.Questionnaires.Find(c.UserContext(), tenantOf(c), f, limit)
	if errors.Is(err, questionnaires.ErrResponseNotFound) {
		return problem(400, "bad-query", "before is not a response of this questionnaire")
	}
	if err != nil {
		return s.domainProblem(err)
	}
	list := page.Responses
	if c.Query("format") == "csv" || strings.Contains(c.Get(fiber.HeaderAccept), "text/csv") {
		header, rows := questionnaires.Table(list)
		c.Set(fiber.HeaderContentType, "text/csv; charset=utf-8")
		c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+c.Params("name")+`-responses.csv"`)
		w := csv.NewWriter(c.Response().BodyWriter())
		_ = w.Write(header)
		for _, row := range rows {
			for i := range row {
				row[i] = spreadsheet.Cell(row[i])
			}
			_ = w.Write(row)
		}
		w.Flush()
		return w.Error()
	}
	out := make([]responseJSON, 0, len(list))
	for _, r := range list {
		out = append(out, responseView(r))
	}
	v := fiber.Map{"responses": out}
	if page.Next != "" {
		v["next"] = page.Next
	}
	return c.JSON(v)
}

// GET /v1/questionnaire-responses?to=&channel=: a patient's responses to
// every questionnaire, newest first, with the filters of responseFilter.
func (s *Server) listPatientResponses(c *fiber.Ctx) error {
	limit, err := queryLimit(c, 100, questionnaires.MaxList)
	if err != nil {
		return err
	}
	f, p := s.responseFilter(c, "")
	if p != nil {
		return p
	}
	page, err := s.opts.Questionnaires.Find(c.UserContext(), tenantOf(c), f, limit)
	if errors.Is(err, questionnaires.ErrResponseNotFound) {
		return problem(400, "bad-query", "before is not a questionnaire response")
	}
	if err != nil {
		return s.domainProblem(err)
	}
	out := make([]responseJSON, 0, len(page.Responses))
	for _, r := range page.Responses {
		out = append(out, responseView(r))
	}
	v := fiber.Map{"responses": out}
	if page.Next != "" {
		v["next"] = page.Next
	}
	return c.JSON(v)
}

// responseFilter reads a response list's filters: state, risk_level (that
// level or higher), to with its channel (an address as GET /v1/messages
// reads it), since and until (RFC 3339), and before. A bad value is 422
// naming every bad parameter.
func (s *Server) responseFilter(c *fiber.Ctx, name string) (questionnaires.Filter, *Problem) {
	f := questionnaires.Filter{Questionnaire: name, State: c.Query("state"), RiskLevel: c.Query("risk_level"), Before: c.Query("before")}
	var errs []FieldError
	bad := func(field, detail string) { errs = append(errs, FieldError{Field: field, Detail: detail}) }
	channelOK, channelBad := false, false
	if v := c.Query("channel"); v != "" {
		if _, channelOK = s.opts.Channels.Get(v); !channelOK && !slices.Contains(questionnaires.Channels, v) {
			bad("channel", "must be one of "+strings.Join(s.opts.Channels.Names(), ", ")+" or web")
			channelBad = true
		}
		f.Channel = v
	}
	if v := c.Query("to"); v != "" {
		who, err := questionnaires.PatientOf(f.Channel, v)
		var ie *invalid.Error
		switch {
		case errors.As(err, &ie) && ie.Errors[0].Field == "to":
			errs = append(errs, ie.Errors...)
		case f.Channel == "":
			bad("channel", "is required with to: the channel the address is on")
		case channelOK:
			f.Who = who
		case !channelBad:
			bad("channel", "has no address of its own with to: give the channel a web form's link went on")
		}
	}
	for _, name := range queryTimes(c, &f.Since, &f.Until) {
		bad(name, rfc3339Rule)
	}
	var ie *invalid.Error
	if err := f.Validate(); errors.As(err, &ie) {
		for _, e := range ie.Errors {
			given := e.Field == "to" && c.Query("to") != "" // and refused above
			if !given && !slices.ContainsFunc(errs, func(x FieldError) bool { return x.Field == e.Field }) {
				errs = append(errs, e)
			}
		}
	}
	if len(errs) > 0 {
		return f, validationProblem(invalid.Sorted(errs))
	}
	return f, nil
}

// responseJSON is a response as the API shows it: the address masked.
type responseJSON struct {
	ID            string                  `json:"id"`
	Questionnaire string                  `json:"questionnaire"`
	Version       int                     `json:"version"`
	Channel       string                  `json:"channel"`
	Via           string                  `json:"via,omitempty"`
	To            map[string]string       `json:"to"`
	Locale        string                  `json:"locale"`
	State         string                  `json:"state"`
	EndReason     string                  `json:"end_reason,omitempty"`
	Current       string                  `json:"current_question,omitempty"`
	Reasks        int                     `json:"reasks"`
	Messages      []string                `json:"messages"`
	Answers       []questionnaires.Answer `json:"answers"`
	Scores        *questionnaires.Scores  `json:"scores,omitempty"`
	Risks         []questionnaires.Risk   `json:"risks"`
	RiskLevel     string                  `json:"risk_level,omitempty"`
	Metadata      any                     `json:"metadata,omitempty"`
	CreatedAt     time.Time               `json:"created_at"`
	UpdatedAt     time.Time               `json:"updated_at"`
	EndedAt       *time.Time              `json:"ended_at,omitempty"`
	// FormURL is a web form's link, in the answer that started it only.
	FormURL string `json:"form_url,omitempty"`
}

func responseView(r *questionnaires.Response) responseJSON {
	v := responseJSON{ID: r.ID, Questionnaire: r.Questionnaire, Version: r.Version, Channel: r.Channel, To: map[string]string{},
		Locale: r.Locale, State: r.State, EndReason: r.EndReason, Current: r.Current, Reasks: r.Reasks, Messages: r.Messages,
		Answers: r.Answers, Scores: r.Scores, Risks: r.Risks, RiskLevel: r.RiskLevel, CreatedAt: r.CreatedAt,
		UpdatedAt: r.UpdatedAt, EndedAt: r.EndedAt, Via: r.Via, FormURL: r.FormURL}
	if len(r.Metadata) > 0 {
		v.Metadata = r.Metadata
	}
	if v.Risks == nil {
		v.Risks = []questionnaires.Risk{}
	}
	if r.To.Phone != "" {
		v.To["phone"] = redact.Phone(r.To.Phone)
	}
	if r.To.WeChatOpenID != "" {
		v.To["wechat_openid"] = redact.Secret(r.To.WeChatOpenID)
	}
	if r.To.Email != "" {
		v.To["email"] = redact.Email(r.To.Email)
	}
	return v
}
