package twilio

import (
	"bytes"
	"encoding/xml"
	"net/url"
	"strings"

	"github.com/patientmsg/gateway/channels"

	"github.com/patientmsg/gateway/internal/ledger"
)

// TwiML is rendered with encoding/xml rather than twilio-go's twiml
// package: that package needs github.com/beevik/etree, which is not in
// this module's go.mod, and it writes attributes in map order, so the same
// call would not get the same bytes twice.

// Limits of what a call asks.
const (
	defaultGatherTimeout = 5  // seconds, Twilio's default
	maxGatherTimeout     = 60 // seconds
	defaultRecordLength  = 60 // seconds
	maxRecordLength      = 600
)

type twimlResponse struct {
	XMLName xml.Name `xml:"Response"`
	Verbs   []any
}

type twimlSay struct {
	XMLName  xml.Name `xml:"Say"`
	Language string   `xml:"language,attr,omitempty"`
	Voice    string   `xml:"voice,attr,omitempty"`
	Text     string   `xml:",chardata"`
}

type twimlGather struct {
	XMLName             xml.Name `xml:"Gather"`
	Input               string   `xml:"input,attr"`
	NumDigits           int      `xml:"numDigits,attr"`
	FinishOnKey         string   `xml:"finishOnKey,attr,omitempty"`
	Timeout             int      `xml:"timeout,attr"`
	Action              string   `xml:"action,attr"`
	Method              string   `xml:"method,attr"`
	ActionOnEmptyResult bool     `xml:"actionOnEmptyResult,attr"`
	Say                 []twimlSay
}

type twimlRecord struct {
	XMLName                       xml.Name `xml:"Record"`
	MaxLength                     int      `xml:"maxLength,attr"`
	PlayBeep                      bool     `xml:"playBeep,attr"`
	Action                        string   `xml:"action,attr"`
	Method                        string   `xml:"method,attr"`
	RecordingStatusCallback       string   `xml:"recordingStatusCallback,attr"`
	RecordingStatusCallbackMethod string   `xml:"recordingStatusCallbackMethod,attr"`
	// Transcribe asks Twilio for a transcript of the recording, posted to
	// TranscribeCallback.
	Transcribe         bool   `xml:"transcribe,attr"`
	TranscribeCallback string `xml:"transcribeCallback,attr"`
}

type twimlRedirect struct {
	XMLName xml.Name `xml:"Redirect"`
	Method  string   `xml:"method,attr"`
	URL     string   `xml:",chardata"`
}

type twimlHangup struct {
	XMLName xml.Name `xml:"Hangup"`
}

// renderTwiML renders a TwiML document of verbs.
func renderTwiML(verbs ...any) []byte {
	b, err := xml.Marshal(twimlResponse{Verbs: verbs})
	if err != nil { // cannot happen with the types above
		b = []byte("<Response><Hangup/></Response>")
	}
	// Text and attributes are escaped, so these literals can only close
	// empty elements.
	b = bytes.ReplaceAll(b, []byte("<Hangup></Hangup>"), []byte("<Hangup/>"))
	b = bytes.ReplaceAll(b, []byte("></Record>"), []byte("/>"))
	return append([]byte(xml.Header), b...)
}

// speech is how a call speaks one language: Twilio's <Say> language and
// voice, and the call's own phrases.
type speech struct {
	Language, Voice string
	phrases         phrases
}

func (s speech) say(text string) twimlSay {
	return twimlSay{Language: s.Language, Voice: s.Voice, Text: text}
}

// phrases are what the call itself says, around the clinic's texts.
type phrases struct {
	thanks  string // after the last answer
	retry   string // a key that is not one of the choices
	trouble string // the answer cannot be taken (storage outage)
	missing string // the message is not known (any more)
}

var (
	phrasesEN = phrases{
		thanks:  "Thank you. Goodbye.",
		retry:   "Sorry, that is not one of the choices.",
		trouble: "Sorry, we cannot take your answer right now. Goodbye.",
		missing: "Sorry, this message is no longer available. Goodbye.",
	}
	phrasesES = phrases{
		thanks:  "Gracias. Adiós.",
		retry:   "Lo sentimos, esa no es una de las opciones.",
		trouble: "Lo sentimos, no podemos registrar su respuesta en este momento. Adiós.",
		missing: "Lo sentimos, este mensaje ya no está disponible. Adiós.",
	}
	phrasesZH = phrases{
		thanks:  "谢谢。再见。",
		retry:   "抱歉，这不是可选的按键。",
		trouble: "抱歉，我们现在无法记录您的回答。再见。",
		missing: "抱歉，此消息已无法获取。再见。",
	}
	phrasesZHHant = phrases{
		thanks:  "謝謝。再見。",
		retry:   "抱歉，這不是可選的按鍵。",
		trouble: "抱歉，我們現在無法記錄您的回答。再見。",
		missing: "抱歉，此訊息已無法取得。再見。",
	}
	phrasesFR = phrases{
		thanks:  "Merci. Au revoir.",
		retry:   "Désolé, ce choix n'est pas proposé.",
		trouble: "Désolé, nous ne pouvons pas enregistrer votre réponse pour le moment. Au revoir.",
		missing: "Désolé, ce message n'est plus disponible. Au revoir.",
	}
	phrasesDE = phrases{
		thanks:  "Vielen Dank. Auf Wiederhören.",
		retry:   "Entschuldigung, diese Taste ist keine der Auswahlmöglichkeiten.",
		trouble: "Entschuldigung, wir können Ihre Antwort gerade nicht speichern. Auf Wiederhören.",
		missing: "Entschuldigung, diese Nachricht ist nicht mehr verfügbar. Auf Wiederhören.",
	}
	phrasesPT = phrases{
		thanks:  "Obrigado. Até logo.",
		retry:   "Desculpe, essa não é uma das opções.",
		trouble: "Desculpe, não podemos registrar sua resposta agora. Até logo.",
		missing: "Desculpe, esta mensagem não está mais disponível. Até logo.",
	}
)

// speeches maps lower-case locales to Twilio's <Say> language and a voice
// of it (Amazon Polly where it has one, Google otherwise). Locales whose
// phrases are not translated speak the clinic's texts in their language
// and the call's own phrases in English.
var speeches = map[string]speech{
	"en-us": {"en-US", "Polly.Joanna", phrasesEN},
	"en-gb": {"en-GB", "Polly.Amy", phrasesEN},
	"en-au": {"en-AU", "Polly.Nicole", phrasesEN},
	"en-in": {"en-IN", "Polly.Raveena", phrasesEN},
	"es-mx": {"es-MX", "Polly.Mia", phrasesES},
	"es-us": {"es-US", "Polly.Lupe", phrasesES},
	"es-es": {"es-ES", "Polly.Lucia", phrasesES},
	"zh-cn": {"cmn-CN", "Polly.Zhiyu", phrasesZH},
	"zh-tw": {"cmn-TW", "Google.cmn-TW-Standard-A", phrasesZHHant},
	"zh-hk": {"yue-HK", "Google.yue-HK-Standard-A", phrasesZHHant},
	"fr-fr": {"fr-FR", "Polly.Lea", phrasesFR},
	"fr-ca": {"fr-CA", "Polly.Chantal", phrasesFR},
	"de-de": {"de-DE", "Polly.Vicki", phrasesDE},
	"pt-br": {"pt-BR", "Polly.Camila", phrasesPT},
	"pt-pt": {"pt-PT", "Polly.Ines", phrasesPT},
	"it-it": {"it-IT", "Polly.Bianca", phrasesEN},
	"ja-jp": {"ja-JP", "Polly.Mizuki", phrasesEN},
	"ko-kr": {"ko-KR", "Polly.Seoyeon", phrasesEN},
	"hi-in": {"hi-IN", "Polly.Aditi", phrasesEN},
	"ru-ru": {"ru-RU", "Polly.Tatyana", phrasesEN},
	"ar":    {"arb", "Polly.Zeina", phrasesEN},
	"vi-vn": {"vi-VN", "Google.vi-VN-Standard-A", phrasesEN},
}

// languageDefaults picks the locale of a bare language.
var languageDefaults = map[string]string{
	"en": "en-us", "es": "es-mx", "zh": "zh-cn", "cmn": "zh-cn", "yue": "zh-hk", "fr": "fr-fr", "de": "de-de",
	"pt": "pt-br", "it": "it-it", "ja": "ja-jp", "ko": "ko-kr", "hi": "hi-in", "ru": "ru-ru", "ar": "ar", "vi": "vi-vn",
}

// speechFor returns how to speak a BCP 47 locale; US English when unknown.
func speechFor(locale string) speech {
	tags := strings.Split(strings.ToLower(strings.ReplaceAll(strings.TrimSpace(locale), "_", "-")), "-")
	lang := tags[0]
	if lang == "zh" {
		// Script and region choose between Mandarin (simplified or
		// traditional text) and Cantonese.
		key := "zh-cn"
		for _, t := range tags[1:] {
			switch t {
			case "hant", "tw":
				key = "zh-tw"
			case "hk", "mo", "yue":
				return speeches["zh-hk"]
			}
		}
		return speeches[key]
	}
	for _, t := range tags[1:] {
		if len(t) == 2 {
			if s, ok := speeches[lang+"-"+t]; ok {
				return s
			}
		}
	}
	if key, ok := languageDefaults[lang]; ok {
		return speeches[key]
	}
	return speeches["en-us"]
}

// callTwiML is the TwiML of a call: the message, then the question, then
// the recording, then the end. Without a key (timeout) Twilio still posts
// to the question's action (actionOnEmptyResult), which asks once more.
func (v *Voice) callTwiML(m *ledger.Message) []byte {
	sp := speechFor(m.Locale)
	var verbs []any
	if strings.TrimSpace(m.Body) != "" {
		verbs = append(verbs, sp.say(m.Body))
	}
	if g := gatherOf(m); g != nil {
		verbs = append(verbs, v.gatherVerb(m.ID, sp, g, false))
	}
	return renderTwiML(append(verbs, v.recordTail(m, sp)...)...)
}

// retryTwiML asks the question once more.
func (v *Voice) retryTwiML(m *ledger.Message, g *ledger.Gather) []byte {
	sp := speechFor(m.Locale)
	verbs := []any{sp.say(sp.phrases.retry), v.gatherVerb(m.ID, sp, g, true)}
	return renderTwiML(append(verbs, v.recordTail(m, sp)...)...)
}

// afterGatherTwiML goes on after the question: the recording, or the end.
func (v *Voice) afterGatherTwiML(m *ledger.Message) []byte {
	sp := speechFor(m.Locale)
	if recordOf(m) != nil {
		return renderTwiML(v.recordTail(m, sp)...)
	}
	return sayAndHangUp(sp, sp.phrases.thanks)
}

func sayAndHangUp(sp speech, text string) []byte {
	return renderTwiML(sp.say(text), twimlHangup{})
}

// missingTwiML is answered for a call whose message is not known: the
// patient hears an apology rather than Twilio's application error.
func missingTwiML() []byte {
	sp := speechFor("")
	return sayAndHangUp(sp, sp.phrases.missing)
}

func (v *Voice) gatherVerb(id string, sp speech, g *ledger.Gather, retry bool) twimlGather {
	action := v.webhookURL(VoiceGatherPath, id)
	if retry {
		action += "&retry=1"
	}
	timeout := g.Timeout
	if timeout <= 0 {
		timeout = defaultGatherTimeout
	}
	return twimlGather{Input: "dtmf", NumDigits: 1, Timeout: min(timeout, maxGatherTimeout), Action: action, Method: "POST",
		ActionOnEmptyResult: true, Say: []twimlSay{sp.say(g.Prompt)}}
}

// recordTail is the recording (when asked for) and the end of the call.
// A patient who stays silent gets no recording and Twilio goes on to the
// Hangup.
func (v *Voice) recordTail(m *ledger.Message, sp speech) []any {
	r := recordOf(m)
	if r == nil {
		return []any{twimlHangup{}}
	}
	var verbs []any
	if strings.TrimSpace(r.Prompt) != "" {
		verbs = append(verbs, sp.say(r.Prompt))
	}
	maxLen := r.MaxLength
	if maxLen <= 0 {
		maxLen = defaultRecordLength
	}
	return append(verbs, twimlRecord{MaxLength: min(maxLen, maxRecordLength), PlayBeep: true,
		Action: v.webhookURL(VoiceRecordPath, m.ID), Method: "POST",
		RecordingStatusCallback: v.webhookURL(VoiceRecordingPath, m.ID), RecordingStatusCallbackMethod: "POST",
		Transcribe: true, TranscribeCallback: v.webhookURL(VoiceTranscriptionPath, m.ID)},
		twimlHangup{})
}

// flowTwiML is one step of an interactive call (channels.CallFlow): what
// to say, then the question by keypad or the recording, whose answer goes
// back with the step's name; or the end. first puts the message's own
// text before it (the call's greeting). A patient silent at a recording
// is redirected to its action without one, so the flow hears of it.
func (v *Voice) flowTwiML(m *ledger.Message, st channels.CallStep, first bool) []byte {
	sp := speechFor(m.Locale)
	var verbs []any
	if first && strings.TrimSpace(m.Body) != "" {
		verbs = append(verbs, sp.say(m.Body))
	}
	if st.Say != "" {
		verbs = append(verbs, sp.say(st.Say))
	}
	step := "&s=" + url.QueryEscape(st.Step)
	switch {
	case st.End != "" || (st.Prompt == "" && !st.Record):
		if st.End != "" {
			verbs = append(verbs, sp.say(st.End))
		}
		verbs = append(verbs, twimlHangup{})
	case st.Record:
		if st.Prompt != "" {
			verbs = append(verbs, sp.say(st.Prompt))
		}
		maxLen := st.MaxLength
		if maxLen <= 0 {
			maxLen = defaultRecordLength
		}
		action := v.webhookURL(VoiceRecordPath, m.ID) + step
		verbs = append(verbs, twimlRecord{MaxLength: min(maxLen, maxRecordLength), PlayBeep: true, Action: action, Method: "POST",
			RecordingStatusCallback: v.webhookURL(VoiceRecordingPath, m.ID), RecordingStatusCallbackMethod: "POST",
			Transcribe: true, TranscribeCallback: v.webhookURL(VoiceTranscriptionPath, m.ID)},
			twimlRedirect{Method: "POST", URL: action})
	default:
		g := twimlGather{Input: "dtmf", NumDigits: 1, Timeout: defaultGatherTimeout + 2, Action: v.webhookURL(VoiceGatherPath, m.ID) + step,
			Method: "POST", ActionOnEmptyResult: true, Say: []twimlSay{sp.say(st.Prompt)}}
		if st.MaxDigits > 1 {
			g.NumDigits, g.FinishOnKey = st.MaxDigits, "#"
		}
		verbs = append(verbs, g)
	}
	return renderTwiML(verbs...)
}

func gatherOf(m *ledger.Message) *ledger.Gather {
	if m.Voice == nil {
		return nil
	}
	return m.Voice.Gather
}

func recordOf(m *ledger.Message) *ledger.Record {
	if m.Voice == nil {
		return nil
	}
	return m.Voice.Record
}
