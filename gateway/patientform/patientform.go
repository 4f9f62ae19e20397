// Package patientform renders the patient web form: one mobile-friendly,
// accessible page per questionnaire, in the patient's language, that
// works without JavaScript. It holds the page's words and looks only; the
// questions, answers and rules are the questionnaires package's.
package patientform

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"html/template"
	"io"
	"strconv"
	"strings"

	"github.com/patientmsg/gateway/internal/questionnaires"
)

//go:embed form.html
var pageHTML string

//go:embed form.css
var pageCSS string

var page = template.Must(template.New("form").Funcs(template.FuncMap{
	"deref": func(p *float64) string { return strconv.FormatFloat(*p, 'f', -1, 64) },
}).Parse(pageHTML))

// ContentSecurityPolicy allows the page's one inline style (by its hash)
// and nothing else: no script at all, forms post only here, no framing.
var ContentSecurityPolicy = "default-src 'none'; style-src '" + styleHash() + "'; img-src 'self'; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func styleHash() string {
	sum := sha256.Sum256([]byte(css()))
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

func css() string { return strings.TrimSpace(pageCSS) }

// Pages.
const (
	// PageForm asks the questions (again, with what did not fit).
	PageForm = "form"
	// PageDone: the form was answered (now, or before: a link is used once).
	PageDone = "done"
	// PageClosed: the questionnaire ended without the form's answers
	// (expired, stopped, closed).
	PageClosed = "closed"
	// PageNotFound: the link is not valid or has expired.
	PageNotFound = "notfound"
	// PageTrouble: the gateway could not load or save the form just now.
	PageTrouble = "trouble"
)

// Page is what one answer shows.
type Page struct {
	Page string
	// Locale is the patient's ("en", "zh-Hans"; English for others).
	Locale string
	// Action is the URL the form posts to (its own link).
	Action string
	View   *questionnaires.FormView
}

type data struct {
	Page, Lang, Action string
	Title, Intro       string
	Questions          []questionnaires.FormQuestion
	Problems           int
	MaxText            int
	T                  map[string]string
	CSS                template.CSS
}

// Render writes the page.
func Render(w io.Writer, p Page) error {
	d := data{Page: p.Page, Lang: lang(p.Locale), Action: p.Action, MaxText: questionnaires.MaxAnswerChars,
		T: words(p.Locale), CSS: template.CSS(css())}
	if v := p.View; v != nil {
		d.Title, d.Intro, d.Questions, d.Problems = v.Title, v.Intro, v.Questions, v.Problems
	}
	var b bytes.Buffer
	if err := page.Execute(&b, d); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

func lang(locale string) string {
	if _, ok := phrases[locale]; ok {
		return locale
	}
	return "en"
}

func words(locale string) map[string]string { return phrases[lang(locale)] }

// LocaleFrom picks a page's language from an Accept-Language header, for
// pages that have no response to take it from.
func LocaleFrom(acceptLanguage string) string {
	for _, part := range strings.Split(acceptLanguage, ",") {
		tag, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		switch l := questionnaires.LocaleOf(strings.TrimSpace(tag)); l {
		case "zh-Hans", "en":
			return l
		}
	}
	return "en"
}

var phrases = map[string]map[string]string{
	"en": {
		"heading":     "Your questionnaire",
		"problems":    "Some answers are missing or do not fit. Please check:",
		"conditional": "Answer this only if it applies after your earlier answers.",
		"range":       "A number from %s to %s.",
		"submit":      "Send my answers",
		"private":     "Your answers go to your care team only. This link is for you alone: please do not share it.",
		"done":        "Thank you. Your answers were sent to your care team. This link cannot be used again.",
		"closed":      "This questionnaire is closed and can no longer be answered.",
		"notfound":    "This link is not valid or has expired.",
		"trouble":     "We could not open or save your questionnaire just now. Please try again in a minute.",
		"urgent":      "If you need help now, call your clinic. In an emergency, call your local emergency number.",
	},
	"zh-Hans": {
		"heading":     "您的问卷",
		"problems":    "有些问题未作答或答案不符合要求，请检查：",
		"conditional": "如根据前面的回答此题适用，请作答。",
		"range":       "请输入%s到%s之间的数字。",
		"submit":      "提交我的回答",
		"private":     "您的回答只会发送给您的医护团队。此链接仅供您本人使用，请勿分享。",
		"done":        "谢谢。您的回答已发送给您的医护团队。此链接不能再次使用。",
		"closed":      "此问卷已关闭，无法再作答。",
		"notfound":    "此链接无效或已过期。",
		"trouble":     "暂时无法打开或保存您的问卷，请一分钟后再试。",
		"urgent":      "如需立即帮助，请致电您的诊所。如遇紧急情况，请拨打当地急救电话。",
	},
}
