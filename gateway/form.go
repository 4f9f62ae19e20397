package gateway

import (
	"bytes"
	"errors"
	"mime"
	"net/url"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/gateway/patientform"
	"github.com/patientmsg/gateway/internal/questionnaires"
)

// The patient web form, at the link a questionnaire sent by channel "web"
// carries (GET shows it, POST answers it). It needs no login: the token
// in the path is the patient's one capability, and it is never logged
// (the access log names the route template only).

func (s *Server) mountForms() {
	s.app.Get(questionnaires.FormPath+":token", s.showForm)
	s.app.Post(questionnaires.FormPath+":token", s.submitForm)
}

// GET /f/{token}
func (s *Server) showForm(c *fiber.Ctx) error {
	token := c.Params("token")
	v, err := s.opts.Questionnaires.Form(c.UserContext(), token)
	return s.formPage(c, token, v, err)
}

// POST /f/{token}: the answers, as application/x-www-form-urlencoded
// (what a browser's form sends). Answers that fit end in a redirect to
// the link (which then says thank you); otherwise the form is shown again
// with what did not fit (422).
func (s *Server) submitForm(c *fiber.Ctx) error {
	token := c.Params("token")
	mt, _, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if err != nil || mt != fiber.MIMEApplicationForm {
		c.Status(fiber.StatusUnsupportedMediaType)
		return s.renderForm(c, patientform.Page{Page: patientform.PageTrouble, Locale: patientform.LocaleFrom(c.Get(fiber.HeaderAcceptLanguage))})
	}
	values, err := url.ParseQuery(string(c.Body()))
	if err != nil {
		values = url.Values{} // a malformed body answers nothing: each question says so
	}
	answers := make(map[string]string, len(values))
	for k, vs := range values {
		answers[k] = vs[0]
	}
	v, err := s.opts.Questionnaires.SubmitForm(c.UserContext(), token, answers)
	if err == nil && v.State == questionnaires.StateInProgress && v.Problems == 0 {
		err = errors.New("form submission neither ended nor refused") // cannot happen
	}
	if err == nil && v.State != questionnaires.StateInProgress {
		// Post/Redirect/Get: a reload does not post again.
		return c.Redirect(questionnaires.FormPath+token, fiber.StatusSeeOther)
	}
	if err == nil {
		c.Status(fiber.StatusUnprocessableEntity)
	}
	return s.formPage(c, token, v, err)
}

func (s *Server) formPage(c *fiber.Ctx, token string, v *questionnaires.FormView, err error) error {
	p := patientform.Page{Action: questionnaires.FormPath + token, View: v}
	switch {
	case errors.Is(err, questionnaires.ErrFormNotFound):
		c.Status(fiber.StatusNotFound)
		p.Page, p.Locale = patientform.PageNotFound, patientform.LocaleFrom(c.Get(fiber.HeaderAcceptLanguage))
	case err != nil:
		s.log.Error("web form not loaded or saved", "err", err)
		c.Status(fiber.StatusServiceUnavailable)
		c.Set(fiber.HeaderRetryAfter, "30")
		p.Page, p.Locale = patientform.PageTrouble, patientform.LocaleFrom(c.Get(fiber.HeaderAcceptLanguage))
	default:
		p.Locale = v.Locale
		switch v.State {
		case questionnaires.StateInProgress:
			p.Page = patientform.PageForm
		case questionnaires.StateCompleted:
			p.Page = patientform.PageDone
		default:
			c.Status(fiber.StatusGone)
			p.Page = patientform.PageClosed
		}
	}
	return s.renderForm(c, p)
}

func (s *Server) renderForm(c *fiber.Ctx, p patientform.Page) error {
	// The page holds a patient's answers: never kept by a browser or proxy.
	patientPage(c, patientform.ContentSecurityPolicy)
	var b bytes.Buffer
	if err := patientform.Render(&b, p); err != nil {
		return err
	}
	return c.Send(b.Bytes())
}
