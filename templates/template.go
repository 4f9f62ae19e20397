// Package templates holds the gateway's message templates: the built-in
// ones shipped as files in this folder and the tenants' own, stored in Redis.
//
// # Format
//
// A template is one document, a YAML file here (post_discharge_day1.yaml)
// or a JSON document a tenant stores with PUT /v1/templates/{name}, with the
// same schema:
//
//	description: First check-in the day after discharge.
//	variables:
//	  - name: clinic_name
//	    description: The clinic's name as patients know it.
//	    example: Riverside Clinic
//	    phi: false
//	  - name: arrive_minutes
//	    description: How many minutes early to arrive.
//	    example: "15"
//	    phi: false
//	    optional: true
//	    default: "15"
//	expect_reply:
//	  options: {"1": confirm, "2": reschedule}
//	  within: 48h
//	locales:
//	  en:
//	    sms: "{{clinic_name}}: ... Reply STOP to opt out."
//	    voice:
//	      text: ...
//	      gather: {prompt: ..., digits: "12"}
//	      record: {prompt: ..., max_length: 60}
//	    wechat: {template_id: ..., data: {field: text}, url: ..., text: ...}
//	    email: {subject: ..., text: ..., html: ...}
//	  zh-CN:
//	    sms: ...
//
// The template's name is the file name without ".yaml" (or the name in the
// URL); a document may repeat it in a "name" field. Every variable says
// whether it is PHI (phi: true or false, never left out), has a description
// and a realistic example; an optional one has a default. Every form of
// every locale is optional, but each locale has at least one. Text fields
// are trimmed of surrounding white space. Unknown fields are errors.
//
// # Placeholders and variables
//
// Texts refer to variables as {{var_name}} (names of lower-case letters,
// digits and _, starting with a letter; spaces inside the braces are
// allowed). Templates are strict: a text that uses a variable the template
// does not declare makes the template invalid, and so does a declared
// variable no text uses. Rendering is strict too (see [Template.Render]): a
// message never goes out with a blank or a placeholder in it. Values are
// inserted as given, except in email HTML, where they are HTML-escaped (safe
// in element text and quoted attributes, so a template must not put a
// placeholder inside a script, a style or an unquoted attribute), and in a
// WeChat URL, where they are percent-encoded.
//
// # Locales
//
// Each template has locale variants keyed by BCP 47 tag ("en", "zh-CN"). A
// [Chain] picks the variant for a requested locale.
//
// # PHI
//
// Variables marked phi: true carry protected health information. Rendering
// refuses them in SMS and WeChat unless the tenant allows it (see
// [PHIError]).
package templates

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/patientmsg/gateway/internal/sms"
)

// Limits of a template document and of what it renders. The per-channel
// limits are those the message API applies to a message's fields.
const (
	// MaxDocBytes is the largest template document.
	MaxDocBytes = 64 << 10
	// MaxNameLen is the longest template name.
	MaxNameLen = 64
	// MaxValueChars is the longest variable value, in characters.
	MaxValueChars = 500
	// MaxVariables is the most variables a template may declare.
	MaxVariables = 50
	// MaxLocales is the most locale variants a template may have.
	MaxLocales = 30
	// MaxDescriptionChars is the longest description of a template or variable.
	MaxDescriptionChars = 500
	// MaxVoiceChars is the most a call may speak in one text or prompt.
	MaxVoiceChars = 4000
	// MaxWeChatChars is the longest WeChat customer-service text.
	MaxWeChatChars = 2000
	// MaxWeChatData is the most fields of a WeChat template message.
	MaxWeChatData = 20
	// MaxWeChatDataChars is the longest value of a WeChat template field.
	MaxWeChatDataChars = 200
	// MaxEmailChars is the longest email text or HTML part.
	MaxEmailChars = 100000
	// MaxSubjectChars is the longest email subject.
	MaxSubjectChars = 250
	// MaxRecordLength is the longest recorded answer, in seconds.
	MaxRecordLength = 300
	// MaxReplyOptions is the most answers an expect_reply may list.
	MaxReplyOptions = 20
)

// Channels a template may have forms for.
const (
	ChannelSMS    = "sms"
	ChannelVoice  = "voice"
	ChannelWeChat = "wechat"
	ChannelEmail  = "email"
)

// Channels lists the channels in the order previews show them.
var Channels = []string{ChannelSMS, ChannelVoice, ChannelWeChat, ChannelEmail}

// Sources of a template.
const (
	SourceBuiltin = "builtin"
	SourceTenant  = "tenant"
)

// Variable is a value a template's texts refer to as {{Name}}.
type Variable struct {
	Name string `json:"name" yaml:"name"`
	// Description tells the caller what to put in the variable.
	Description string `json:"description" yaml:"description"`
	// Example is a realistic value, used by previews and to check the
	// template renders.
	Example string `json:"example" yaml:"example"`
	// PHI marks protected health information (a medication, a department
	// that reveals a condition): refused in SMS and WeChat unless allowed.
	PHI bool `json:"phi" yaml:"phi"`
	// Optional variables may be left out of a request; Default is used then.
	Optional bool   `json:"optional,omitempty" yaml:"optional,omitempty"`
	Default  string `json:"default,omitempty" yaml:"default,omitempty"`
}

// Template is a message template: variables and, per locale, the texts of
// each channel.
type Template struct {
	Name        string       `json:"name" yaml:"name"`
	Description string       `json:"description,omitempty" yaml:"description,omitempty"`
	Variables   []Variable   `json:"variables" yaml:"variables"`
	ExpectReply *ExpectReply `json:"expect_reply,omitempty" yaml:"expect_reply,omitempty"`
	// Locales maps a BCP 47 tag, in canonical form ("zh-CN"), to its forms.
	Locales map[string]*Forms `json:"locales" yaml:"locales"`
	// Source is SourceBuiltin or SourceTenant. It is set by the gateway: a
	// document may carry it (so a template read from the API can be stored
	// again) but its value is ignored.
	Source string `json:"source,omitempty" yaml:"source,omitempty"`
}

// ExpectReply is the answers a template's message asks for by default, as
// the message API's expect_reply.
type ExpectReply struct {
	// Options maps an answer ("1") to its meaning ("confirm").
	Options map[string]string `json:"options" yaml:"options"`
	// Within is how long the question stays open: a Go duration ("48h") or
	// a number of days ("7d"), from 1m to 30d. Empty means the API default.
	Within string `json:"within,omitempty" yaml:"within,omitempty"`
}

// Forms are a locale's texts per channel. A nil form (or an empty SMS
// text) means the template cannot be sent on that channel in that locale.
type Forms struct {
	SMS    string      `json:"sms,omitempty" yaml:"sms,omitempty"`
	Voice  *VoiceForm  `json:"voice,omitempty" yaml:"voice,omitempty"`
	WeChat *WeChatForm `json:"wechat,omitempty" yaml:"wechat,omitempty"`
	Email  *EmailForm  `json:"email,omitempty" yaml:"email,omitempty"`
}

// VoiceForm is what a call says, and optionally asks.
type VoiceForm struct {
	Text   string      `json:"text" yaml:"text"`
	Gather *GatherForm `json:"gather,omitempty" yaml:"gather,omitempty"`
	Record *RecordForm `json:"record,omitempty" yaml:"record,omitempty"`
}

// GatherForm asks the patient to press a key.
type GatherForm struct {
	Prompt string `json:"prompt" yaml:"prompt"`
	// Digits are the accepted keys, e.g. "12".
	Digits string `json:"digits" yaml:"digits"`
}

// RecordForm asks the patient to speak an answer, which is recorded.
type RecordForm struct {
	Prompt string `json:"prompt" yaml:"prompt"`
	// MaxLength is the longest recording in seconds; 0 means the API default.
	MaxLength int `json:"max_length,omitempty" yaml:"max_length,omitempty"`
}

// WeChatForm is a WeChat official account message: a template message
// (TemplateID, Data, URL) and/or a customer-service text (Text).
//
// A template message's ID is registered in the clinic's own official
// account, so the built-in templates carry only Text; a tenant's template
// adds its account's TemplateID and field names.
type WeChatForm struct {
	TemplateID string            `json:"template_id,omitempty" yaml:"template_id,omitempty"`
	Data       map[string]string `json:"data,omitempty" yaml:"data,omitempty"`
	URL        string            `json:"url,omitempty" yaml:"url,omitempty"`
	Text       string            `json:"text,omitempty" yaml:"text,omitempty"`
}

// EmailForm is an email: subject, text part and optional HTML part.
type EmailForm struct {
	Subject string `json:"subject" yaml:"subject"`
	Text    string `json:"text" yaml:"text"`
	HTML    string `json:"html,omitempty" yaml:"html,omitempty"`
}

// Errors of parsing and storing templates.
var (
	// ErrTooLarge: the document is larger than MaxDocBytes.
	ErrTooLarge = errors.New("template document too large")
)

// Problem is one thing wrong with a template document.
type Problem struct {
	// Field is the path of the field, e.g. "locales.zh-CN.sms" or
	// "variables[2].name"; empty for the document as a whole.
	Field string `json:"field,omitempty"`
	// Message says what is wrong, in words a clinic developer can act on.
	Message string `json:"message"`
}

// ParseError lists everything wrong with a template document.
type ParseError struct {
	Template string
	Problems []Problem
}

func (e *ParseError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "template %q is invalid: ", e.Template)
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		if p.Field != "" {
			b.WriteString(p.Field + " ")
		}
		b.WriteString(p.Message)
	}
	return b.String()
}

var namePattern = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)

// ValidName says whether name is a valid template name: 1 to 64 lower-case
// letters, digits and underscores.
func ValidName(name string) bool { return namePattern.MatchString(name) }

// Parse decodes and validates a template document (YAML, or JSON when
// isJSON) named name. It reports every problem it finds in a *ParseError,
// and a document larger than MaxDocBytes with ErrTooLarge.
//
// Besides the schema, Parse checks that every variable a text uses is
// declared and every declared variable is used, that examples and defaults
// are valid values, and that every form renders within its channel's
// limits with the example values.
func Parse(name string, data []byte, isJSON bool) (*Template, error) {
	if len(data) > MaxDocBytes {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d (64 KiB)", ErrTooLarge, len(data), MaxDocBytes)
	}
	ps := &problems{}
	if !ValidName(name) {
		ps.add("name", "must be 1 to 64 lower-case letters, digits and _, e.g. appointment_reminder")
	}
	if !utf8.Valid(data) {
		ps.add("", "is not valid UTF-8")
		return nil, ps.err(name)
	}
	var t Template
	var err error
	if isJSON {
		err = decodeJSON(data, &t)
	} else {
		err = decodeYAML(data, &t)
	}
	if err != nil {
		ps.add("", err.Error())
		return nil, ps.err(name)
	}
	for _, i := range phiUndeclared(data, isJSON) {
		if i < len(t.Variables) {
			ps.add(fmt.Sprintf("variables[%d] (%s).phi", i, t.Variables[i].Name),
				"is required: true if the value is protected health information (a medication, a test, a department that reveals a condition), false if not")
		}
	}
	if t.Name != "" && t.Name != name {
		ps.add("name", fmt.Sprintf("is %q but the template is named %q: leave it out or make them match", t.Name, name))
	}
	t.Name, t.Source = name, ""
	t.validate(ps)
	if len(ps.list) > 0 {
		return nil, ps.err(name)
	}
	return &t, nil
}

// decodeJSON decodes one JSON object, refusing unknown fields.
func decodeJSON(data []byte, t *Template) error {
	if len(bytes.TrimSpace(data)) == 0 || bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return errors.New("is empty: expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(t); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te) && te.Field != "":
			// Field is the path of struct fields only (map keys such as the
			// locale are left out), so the byte offset locates it.
			last := te.Field[strings.LastIndex(te.Field, ".")+1:]
			return fmt.Errorf("field %s must be %s, not a JSON %s (at byte %d, under %s)",
				last, kindWord(te.Type.Kind().String()), te.Value, te.Offset, te.Field)
		case errors.As(err, &te):
			return fmt.Errorf("must be a JSON object, not a JSON %s", te.Value)
		case errors.As(err, &se):
			return fmt.Errorf("is not valid JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
		case errors.Is(err, io.ErrUnexpectedEOF):
			return errors.New("is not valid JSON: it ends too early")
		}
		if msg := cleanDecodeError(err.Error()); strings.HasPrefix(msg, "unknown field") {
			return errors.New("has an " + msg + ": check the spelling against the template format")
		}
		return errors.New("is not valid JSON: " + cleanDecodeError(err.Error()))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("has data after the JSON object")
	}
	return nil
}

// decodeYAML decodes one YAML document, refusing unknown fields.
func decodeYAML(data []byte, t *Template) (err error) {
	defer func() {
		// The YAML decoder is not expected to panic; if it ever does on a
		// malformed document, report the document as invalid rather than
		// take the process down.
		if r := recover(); r != nil {
			err = fmt.Errorf("is not valid YAML (%v)", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(t); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("is empty: expected a YAML mapping")
		}
		return errors.New("is not a valid template: " + cleanDecodeError(err.Error()))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("has more than one YAML document")
	}
	return nil
}

// phiUndeclared returns the indexes of the variables of an already decoded
// document that do not say whether they are PHI. The flag must be explicit:
// a forgotten one would otherwise read as "not PHI" and slip past the lint.
func phiUndeclared(data []byte, isJSON bool) []int {
	var doc struct {
		Variables []struct {
			PHI *bool `json:"phi" yaml:"phi"`
		} `json:"variables" yaml:"variables"`
	}
	var err error
	if isJSON {
		err = json.Unmarshal(data, &doc)
	} else {
		err = yaml.Unmarshal(data, &doc)
	}
	if err != nil {
		return nil // cannot happen: the document decoded strictly already
	}
	var missing []int
	for i, v := range doc.Variables {
		if v.PHI == nil {
			missing = append(missing, i)
		}
	}
	return missing
}

var (
	yamlUnknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)
	yamlWrongType    = regexp.MustCompile("cannot unmarshal !!\\w+ (`[^`]*`) into (\\S+)")
)

// cleanDecodeError rewords a decoder's message for a template author,
// without Go type names.
func cleanDecodeError(s string) string {
	s = strings.TrimPrefix(s, "json: ")
	s = strings.TrimPrefix(s, "yaml: ")
	s = strings.TrimPrefix(s, "unmarshal errors:")
	s = yamlUnknownField.ReplaceAllString(s, "unknown field \"$1\"")
	s = yamlWrongType.ReplaceAllStringFunc(s, func(m string) string {
		sub := yamlWrongType.FindStringSubmatch(m)
		want := "a list or mapping"
		switch sub[2] {
		case "string":
			want = "text"
		case "int":
			want = "a whole number"
		case "bool":
			want = "true or false"
		}
		return sub[1] + " has the wrong type: " + want + " is expected"
	})
	return strings.Join(strings.Fields(s), " ")
}

// kindWord names a Go kind as a JSON type.
func kindWord(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "int", "int64":
		return "a whole number"
	case "bool":
		return "true or false"
	case "map", "struct", "ptr":
		return "an object"
	case "slice":
		return "a list"
	}
	return "a " + kind
}

// problems collects a document's problems.
type problems struct{ list []Problem }

func (p *problems) add(field, msg string) {
	p.list = append(p.list, Problem{Field: field, Message: msg})
}

func (p *problems) err(name string) error {
	if len(p.list) == 0 {
		return nil
	}
	return &ParseError{Template: name, Problems: p.list}
}

// validate checks a decoded template, normalising locale tags and trimming
// texts.
func (t *Template) validate(ps *problems) {
	if n := utf8.RuneCountInString(t.Description); n > MaxDescriptionChars {
		ps.add("description", fmt.Sprintf("is longer than %d characters", MaxDescriptionChars))
	}
	t.Description = strings.TrimSpace(t.Description)

	declared := t.validateVariables(ps)
	t.validateExpectReply(ps)

	if len(t.Locales) == 0 {
		ps.add("locales", "is required: give at least one locale, e.g. en, with its forms")
		return
	}
	if len(t.Locales) > MaxLocales {
		ps.add("locales", fmt.Sprintf("has more than %d locales", MaxLocales))
		return
	}
	locales := make(map[string]*Forms, len(t.Locales))
	used := map[string]bool{}
	for _, key := range sortedKeys(t.Locales) {
		field := "locales." + key
		tag, ok := canonicalLocale(key)
		switch {
		case !ok:
			ps.add(field, "is not a BCP 47 language tag such as en, en-GB or zh-CN")
			continue
		case locales[tag] != nil:
			ps.add(field, fmt.Sprintf("is the same locale as another key (%s)", tag))
			continue
		}
		f := t.Locales[key]
		if f == nil || f.empty() {
			ps.add(field, "has no forms: give at least one of sms, voice, wechat and email")
			continue
		}
		f.trim()
		f.validate(field, ps)
		f.eachField(func(path string, _ fieldKind, s string) string {
			names, err := placeholders(s)
			if err != nil {
				return s // reported by validate
			}
			for _, n := range names {
				used[n] = true
				if declared[n] == nil {
					ps.add(field+"."+path, fmt.Sprintf("uses {{%s}}, which is not declared in variables: declare it or fix the name", n))
				}
			}
			return s
		})
		locales[tag] = f
	}
	t.Locales = locales
	for i, v := range t.Variables {
		if validVarName(v.Name) && !used[v.Name] {
			ps.add(fmt.Sprintf("variables[%d] (%s)", i, v.Name), fmt.Sprintf("is declared but no text uses it: use it as {{%s}} or remove it", v.Name))
		}
	}
	if len(ps.list) > 0 {
		return
	}
	// Render every form with the example values: a template whose examples
	// do not fit its channels is refused now, not at send time.
	examples := make(map[string]string, len(t.Variables))
	for _, v := range t.Variables {
		examples[v.Name] = v.Example
	}
	for _, tag := range sortedKeys(t.Locales) {
		f := t.Locales[tag]
		for _, ch := range Channels {
			if !f.has(ch) {
				continue
			}
			out, _, err := renderForm(f, ch, func(name string) (string, bool) { v, ok := examples[name]; return v, ok })
			if err != nil {
				ps.add("locales."+tag+"."+ch, err.Error())
				continue
			}
			for _, p := range checkOutput(ch, out) {
				ps.add("locales."+tag+"."+p.Field, "with the example values "+p.Message)
			}
		}
	}
}

// validateVariables checks the declared variables and indexes them by name.
func (t *Template) validateVariables(ps *problems) map[string]*Variable {
	declared := make(map[string]*Variable, len(t.Variables))
	if len(t.Variables) > MaxVariables {
		ps.add("variables", fmt.Sprintf("has more than %d variables", MaxVariables))
	}
	for i := range t.Variables {
		v := &t.Variables[i]
		field := fmt.Sprintf("variables[%d]", i)
		if !validVarName(v.Name) {
			ps.add(field+".name", fmt.Sprintf("%q is not a variable name: use lower-case letters, digits and _, starting with a letter, at most %d characters", v.Name, MaxVarName))
			continue
		}
		field = fmt.Sprintf("variables[%d] (%s)", i, v.Name)
		if declared[v.Name] != nil {
			ps.add(field, "is declared twice")
			continue
		}
		declared[v.Name] = v
		v.Description = strings.TrimSpace(v.Description)
		switch {
		case v.Description == "":
			ps.add(field+".description", "is required: say what the caller puts in this variable")
		case utf8.RuneCountInString(v.Description) > MaxDescriptionChars:
			ps.add(field+".description", fmt.Sprintf("is longer than %d characters", MaxDescriptionChars))
		}
		if msg := checkValue(v.Example); msg != "" {
			ps.add(field+".example", "is required and must be a realistic value: it "+msg)
		}
		switch {
		case v.Optional:
			if msg := checkValue(v.Default); msg != "" {
				ps.add(field+".default", "is required for an optional variable (it is used when the request leaves the variable out): it "+msg)
			}
		case v.Default != "":
			ps.add(field+".default", "only applies to optional variables: add optional: true or remove the default")
		}
	}
	return declared
}

// validateExpectReply checks the default answers a template asks for.
func (t *Template) validateExpectReply(ps *problems) {
	er := t.ExpectReply
	if er == nil {
		return
	}
	if len(er.Options) == 0 || len(er.Options) > MaxReplyOptions {
		ps.add("expect_reply.options", fmt.Sprintf("must map 1 to %d answers to their meaning, e.g. {\"1\": \"confirm\", \"2\": \"reschedule\"}", MaxReplyOptions))
	}
	for _, k := range sortedKeys(er.Options) {
		v := er.Options[k]
		if k == "" || len(k) > 16 || strings.IndexFunc(k, unicode.IsSpace) >= 0 || v == "" || utf8.RuneCountInString(v) > 64 {
			ps.add("expect_reply.options", "keys are 1-16 characters without spaces; meanings 1-64 characters")
			break
		}
	}
	if er.Within != "" {
		if _, ok := ParseWithin(er.Within); !ok {
			ps.add("expect_reply.within", "must be a duration from 1m to 30d, e.g. 48h or 7d")
		}
	}
}

// ParseWithin parses an expect_reply "within": a Go duration ("48h") or a
// number of days ("7d"), from 1 minute to 30 days.
func ParseWithin(s string) (time.Duration, bool) {
	d, err := time.ParseDuration(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, perr := strconv.Atoi(days)
		if perr == nil && n >= 0 && n <= 30 {
			d, err = time.Duration(n)*24*time.Hour, nil
		} else {
			err = errors.New("bad days")
		}
	}
	if err != nil || d < time.Minute || d > 30*24*time.Hour {
		return 0, false
	}
	return d, true
}

// empty says whether f has no form at all.
func (f *Forms) empty() bool {
	return strings.TrimSpace(f.SMS) == "" && f.Voice == nil && f.WeChat == nil && f.Email == nil
}

// has says whether f has a form for the channel.
func (f *Forms) has(channel string) bool {
	if f == nil {
		return false
	}
	switch channel {
	case ChannelSMS:
		return f.SMS != ""
	case ChannelVoice:
		return f.Voice != nil
	case ChannelWeChat:
		return f.WeChat != nil
	case ChannelEmail:
		return f.Email != nil
	}
	return false
}

// trim removes surrounding white space from every text.
func (f *Forms) trim() {
	f.eachField(func(_ string, _ fieldKind, s string) string { return strings.TrimSpace(s) })
	if f.Voice != nil && f.Voice.Gather != nil {
		f.Voice.Gather.Digits = strings.TrimSpace(f.Voice.Gather.Digits)
	}
	if f.WeChat != nil {
		f.WeChat.TemplateID = strings.TrimSpace(f.WeChat.TemplateID)
	}
}

// validate checks the structure and static limits of a locale's forms;
// field is the locale's path ("locales.en").
func (f *Forms) validate(field string, ps *problems) {
	// Placeholders: every text must parse.
	f.eachField(func(path string, _ fieldKind, s string) string {
		if _, err := parseText(s); err != nil {
			ps.add(field+"."+path, err.Error())
		}
		return s
	})
	tooLong := func(path, s string, max int) {
		if utf8.RuneCountInString(s) > max {
			ps.add(field+"."+path, fmt.Sprintf("is longer than %d characters", max))
		}
	}
	tooLong("sms", f.SMS, sms.MaxChars)
	if v := f.Voice; v != nil {
		if v.Text == "" {
			ps.add(field+".voice.text", "is required: what the call says")
		}
		tooLong("voice.text", v.Text, MaxVoiceChars)
		if g := v.Gather; g != nil {
			if g.Prompt == "" {
				ps.add(field+".voice.gather.prompt", "is required: the question the patient answers with a key")
			}
			tooLong("voice.gather.prompt", g.Prompt, MaxVoiceChars)
			if g.Digits == "" || strings.Trim(g.Digits, "0123456789*#") != "" || len(g.Digits) > 12 {
				ps.add(field+".voice.gather.digits", "must list 1 to 12 accepted keys of 0-9, * and #, e.g. \"12\"")
			}
		}
		if r := v.Record; r != nil {
			if r.Prompt == "" {
				ps.add(field+".voice.record.prompt", "is required: what the patient is asked to say")
			}
			tooLong("voice.record.prompt", r.Prompt, MaxVoiceChars)
			if r.MaxLength < 0 || r.MaxLength > MaxRecordLength {
				ps.add(field+".voice.record.max_length", fmt.Sprintf("must be from 1 to %d seconds (0 or absent: the default)", MaxRecordLength))
			}
		}
	}
	if w := f.WeChat; w != nil {
		switch {
		case w.TemplateID == "" && len(w.Data) > 0:
			ps.add(field+".wechat.template_id", "is required with data: the template's id in the official account")
		case w.TemplateID != "" && len(w.Data) == 0:
			ps.add(field+".wechat.data", "is required with template_id: the template message's fields")
		case w.TemplateID == "" && w.Text == "":
			ps.add(field+".wechat", "needs a text (customer-service message) or a template_id with data (template message)")
		case w.TemplateID == "" && w.URL != "":
			ps.add(field+".wechat.url", "only applies to template messages: put a link for a text message in the text")
		}
		if strings.Contains(w.TemplateID, "{{") || len(w.TemplateID) > 128 || strings.IndexFunc(w.TemplateID, unicode.IsSpace) >= 0 {
			ps.add(field+".wechat.template_id", "must be the template's id as the official account shows it (no placeholders, no spaces, at most 128 characters)")
		}
		if len(w.Data) > MaxWeChatData {
			ps.add(field+".wechat.data", fmt.Sprintf("has more than %d fields", MaxWeChatData))
		}
		for _, k := range sortedKeys(w.Data) {
			if k == "" || len(k) > 32 || strings.Contains(k, "{{") {
				ps.add(field+".wechat.data", fmt.Sprintf("field name %s must be 1-32 characters without placeholders", quoteSnippet(k)))
			}
			if w.Data[k] == "" {
				ps.add(field+".wechat.data."+k, "must not be empty")
			}
		}
		tooLong("wechat.text", w.Text, MaxWeChatChars)
	}
	if e := f.Email; e != nil {
		if e.Subject == "" {
			ps.add(field+".email.subject", "is required")
		}
		if strings.ContainsAny(e.Subject, "\r\n") {
			ps.add(field+".email.subject", "must be one line")
		}
		tooLong("email.subject", e.Subject, MaxSubjectChars)
		if e.Text == "" {
			ps.add(field+".email.text", "is required: the plain-text part every mail client can show")
		}
		tooLong("email.text", e.Text, MaxEmailChars)
		tooLong("email.html", e.HTML, MaxEmailChars)
	}
}

// fieldKind says how a variable's value is inserted into a field.
type fieldKind int

const (
	kindText fieldKind = iota // inserted as is
	kindHTML                  // HTML-escaped
	kindURL                   // percent-encoded
)

// eachField calls fn for every non-empty text of f that may hold
// placeholders, in a fixed order, with its path below the locale
// ("voice.gather.prompt"), and stores what fn returns in its place.
func (f *Forms) eachField(fn func(path string, kind fieldKind, s string) string) {
	for _, ch := range Channels {
		f.eachChannelField(ch, fn)
	}
}

// eachChannelField is eachField for one channel's form.
func (f *Forms) eachChannelField(channel string, fn func(path string, kind fieldKind, s string) string) {
	do := func(path string, kind fieldKind, p *string) {
		if *p != "" {
			*p = fn(path, kind, *p)
		}
	}
	switch channel {
	case ChannelSMS:
		do("sms", kindText, &f.SMS)
	case ChannelVoice:
		if v := f.Voice; v != nil {
			do("voice.text", kindText, &v.Text)
			if v.Gather != nil {
				do("voice.gather.prompt", kindText, &v.Gather.Prompt)
			}
			if v.Record != nil {
				do("voice.record.prompt", kindText, &v.Record.Prompt)
			}
		}
	case ChannelWeChat:
		if w := f.WeChat; w != nil {
			for _, k := range sortedKeys(w.Data) {
				s := w.Data[k]
				do("wechat.data."+k, kindText, &s)
				w.Data[k] = s
			}
			do("wechat.url", kindURL, &w.URL)
			do("wechat.text", kindText, &w.Text)
		}
	case ChannelEmail:
		if e := f.Email; e != nil {
			do("email.subject", kindText, &e.Subject)
			do("email.text", kindText, &e.Text)
			do("email.html", kindHTML, &e.HTML)
		}
	}
}

// uses lists the variables a channel's form uses, sorted.
func (f *Forms) uses(channel string) ([]string, error) {
	seen := map[string]bool{}
	var firstErr error
	f.eachChannelField(channel, func(path string, _ fieldKind, s string) string {
		names, err := placeholders(s)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("%s %w", path, err)
		}
		for _, n := range names {
			seen[n] = true
		}
		return s
	})
	return sortedKeys(seen), firstErr
}

// checkValue reports what is wrong with a variable's value ("" if nothing):
// it must be valid UTF-8, not blank, at most MaxValueChars characters, with
// no control characters other than newline and tab.
func checkValue(v string) string {
	switch {
	case !utf8.ValidString(v):
		return "is not valid UTF-8"
	case strings.TrimSpace(v) == "":
		return "is blank"
	case utf8.RuneCountInString(v) > MaxValueChars:
		return fmt.Sprintf("is longer than %d characters", MaxValueChars)
	}
	for _, r := range v {
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return fmt.Sprintf("contains the control character %U (only newline and tab are allowed)", r)
		}
	}
	return ""
}

// checkOutput checks a rendered form against its channel's limits. Field
// paths are below the locale ("email.subject").
func checkOutput(channel string, f *Forms) []Problem {
	var out []Problem
	bad := func(field, format string, a ...any) {
		out = append(out, Problem{Field: field, Message: fmt.Sprintf(format, a...)})
	}
	tooLong := func(field, s string, max int) {
		if n := utf8.RuneCountInString(s); n > max {
			bad(field, "is %d characters long, more than the channel's %d", n, max)
		}
	}
	switch channel {
	case ChannelSMS:
		tooLong("sms", f.SMS, sms.MaxChars)
	case ChannelVoice:
		tooLong("voice.text", f.Voice.Text, MaxVoiceChars)
		if f.Voice.Gather != nil {
			tooLong("voice.gather.prompt", f.Voice.Gather.Prompt, MaxVoiceChars)
		}
		if f.Voice.Record != nil {
			tooLong("voice.record.prompt", f.Voice.Record.Prompt, MaxVoiceChars)
		}
	case ChannelWeChat:
		w := f.WeChat
		for _, k := range sortedKeys(w.Data) {
			tooLong("wechat.data."+k, w.Data[k], MaxWeChatDataChars)
		}
		tooLong("wechat.text", w.Text, MaxWeChatChars)
		if w.URL != "" {
			if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				bad("wechat.url", "is not an absolute http(s) URL")
			}
		}
	case ChannelEmail:
		e := f.Email
		if strings.ContainsAny(e.Subject, "\r\n") {
			bad("email.subject", "must be one line (a value put a line break in it)")
		}
		tooLong("email.subject", e.Subject, MaxSubjectChars)
		tooLong("email.text", e.Text, MaxEmailChars)
		tooLong("email.html", e.HTML, MaxEmailChars)
	}
	return out
}

// sortedKeys returns m's keys in sorted order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Clone returns a deep copy of t.
func (t *Template) Clone() *Template {
	if t == nil {
		return nil
	}
	c := *t
	c.Variables = slices.Clone(t.Variables)
	if t.ExpectReply != nil {
		c.ExpectReply = t.ExpectReply.clone()
	}
	if t.Locales != nil {
		c.Locales = make(map[string]*Forms, len(t.Locales))
		for k, f := range t.Locales {
			c.Locales[k] = f.clone()
		}
	}
	return &c
}

func (e *ExpectReply) clone() *ExpectReply {
	if e == nil {
		return nil
	}
	c := *e
	if e.Options != nil {
		c.Options = make(map[string]string, len(e.Options))
		for k, v := range e.Options {
			c.Options[k] = v
		}
	}
	return &c
}

// clone returns a deep copy of f.
func (f *Forms) clone() *Forms {
	if f == nil {
		return nil
	}
	c := *f
	if f.Voice != nil {
		v := *f.Voice
		if v.Gather != nil {
			g := *v.Gather
			v.Gather = &g
		}
		if v.Record != nil {
			r := *v.Record
			v.Record = &r
		}
		c.Voice = &v
	}
	if f.WeChat != nil {
		w := *f.WeChat
		if w.Data != nil {
			w.Data = make(map[string]string, len(f.WeChat.Data))
			for k, v := range f.WeChat.Data {
				w.Data[k] = v
			}
		}
		c.WeChat = &w
	}
	if f.Email != nil {
		e := *f.Email
		c.Email = &e
	}
	return &c
}

// LocaleTags are the template's locales, sorted.
func (t *Template) LocaleTags() []string { return slices.Sorted(maps.Keys(t.Locales)) }

// FormChannels are the channels some locale of the template has a form
// for, in the order of Channels.
func (t *Template) FormChannels() []string {
	seen := map[string]bool{}
	for _, f := range t.Locales {
		if f == nil {
			continue
		}
		seen[ChannelSMS] = seen[ChannelSMS] || f.SMS != ""
		seen[ChannelVoice] = seen[ChannelVoice] || f.Voice != nil
		seen[ChannelWeChat] = seen[ChannelWeChat] || f.WeChat != nil
		seen[ChannelEmail] = seen[ChannelEmail] || f.Email != nil
	}
	var out []string
	for _, ch := range Channels {
		if seen[ch] {
			out = append(out, ch)
		}
	}
	return out
}
