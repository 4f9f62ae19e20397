package consent

import (
	"regexp"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// Outcome is what a patient's free-text reply says about consent.
type Outcome int

// Outcomes of Recognise, weakest first.
const (
	// NotRevocation is an ordinary reply.
	NotRevocation Outcome = iota
	// PossibleRevocation may be a wish to stop ("Leave me alone"): the
	// patient is asked to confirm with STOP and staff are told.
	PossibleRevocation
	// ClearRevocation is a wish to stop in other words ("Stop texting me",
	// "取消订阅"): opted out at once, the words kept as evidence.
	ClearRevocation
	// PerSe is an opt-out keyword (STOP, QUIT, END, REVOKE, OPT OUT, CANCEL,
	// UNSUBSCRIBE, 退订, TD …), with padding, repetition or punctuation.
	PerSe
)

func (o Outcome) String() string {
	switch o {
	case PossibleRevocation:
		return "possible"
	case ClearRevocation:
		return "clear"
	case PerSe:
		return "per_se"
	}
	return "none"
}

// Revocation is the recogniser's reading of a reply.
type Revocation struct {
	Outcome Outcome
	// Lang is the language of the words matched ("en", "es", "zh"): the
	// confirmation or clarification is sent in it.
	Lang string
}

// phrase is one entry of the revocation table: a pattern over the
// normalised text (see NormaliseText), padded with one space each side so
// that " word " matches a whole word, and what a match means. Controls
// (NotRevocation) are checked first and win over clear and possible
// entries: "can I stop taking the pills" is a question, not a wish.
type phrase struct {
	lang    string
	outcome Outcome
	pattern string
}

// phrases is the table of revocations and controls. To add a language or a
// phrase, add rows here and cases to testdata/revocation_corpus.tsv; the
// patterns see lower case, unaccented, punctuation-free text with words
// separated by one space ("don't" is "dont", "No más" is "no mas").
var phrases = []phrase{
	// Controls: stopping a medicine or a habit, a symptom that stopped or
	// will not, a place, a negation of a wish to stop.
	{"en", NotRevocation, ` stop (taking|using|eating|drinking|smoking|the (pills?|meds|medicines?|medications?|tablets?|treatment|dose|insulin|antibiotics?)|my (pills?|meds|medicines?|medications?|tablets?|treatment|dose|insulin|antibiotics?)) `},
	{"en", NotRevocation, ` (pain|bleeding|cough|coughing|fever|nausea|itching|swelling|diarrhea|vomiting) (has |wont |doesnt |didnt |will not |does not |did not |to |wouldnt |would not |cant |cannot )?stop | (it|this|that) (wont|doesnt|didnt|will not|does not|did not|wouldnt|would not) stop `},
	{"en", NotRevocation, ` (dont|do not|never|didnt|did not|please dont|pls dont|wont|will not|cant|cannot|can not) (stop|unsubscribe|opt out|cancel) `},
	{"en", NotRevocation, ` (didnt|did not|dont|do not) (mean|want|wanna) to (stop|unsubscribe|opt out|cancel) `},
	{"en", NotRevocation, ` (bus|train|next|last|full|non|pit|truck) stop | stop (by|in|over|sign) | instead `},
	{"en", NotRevocation, ` quit (smoking|drinking|my job|vaping) `},
	{"en", NotRevocation, ` opt (me )?out of (the |my |a |this |that )?(flu|vaccine|vaccination|shot|procedure|surgery|study|research|trial|test|screening|appointment|treatment|program) `},
	{"es", NotRevocation, ` dejar de (tomar|usar|fumar|beber) | (dolor|sangrado|tos|fiebre) (ya )?(se )?(paro|detuvo|quito) | dejo de (doler|sangrar) `},
	{"zh", NotRevocation, `停药|停止(服药|吃药|用药|治疗)|(疼|痛|血|咳|烧).{0,4}(停|止)|(不要|别)停`},

	// Clear revocation in other words.
	{"en", ClearRevocation, ` (stop|quit|cease|cancel) (texting|txting|texing|txt|messaging|msging|sending|contacting|emailing|bothering|spamming|pestering) `},
	{"en", ClearRevocation, ` (stop|quit|cancel) (all |the |these |those |your |this |ur |my |any |further )*(messages|message|texts|text|text messages|msgs|sms|emails|reminders|notifications|alerts|subscription) `},
	{"en", ClearRevocation, ` (stop|quit) (getting|receiving|recieving) `},
	{"en", ClearRevocation, ` (dont|do not|never|pls dont|please dont) (text|txt|message|msg|contact|email|sms) (me|us) | (dont|do not|never) send (me )?(anything|any more|anymore|messages|texts) `},
	{"en", ClearRevocation, ` (remove|delete|drop) (me|my number|my phone|my email|this number) (off|from) | take (me|my number|my phone|my email|this number) off `},
	{"en", ClearRevocation, `^ (remove|delete) (me|my number) $`},
	{"en", ClearRevocation, ` unsubscribe (me|us|this number|my number) | unsub | opt (me )?out | optout | opt me out `},
	{"en", ClearRevocation, ` no (more|further) (messages|texts|text messages|msgs|sms|emails|reminders|notifications|contact|texting) `},
	{"en", ClearRevocation, ` ((dont|do not|no longer) (want|wish)|no longer need) (to (get|receive|recieve) )?(any |anymore |any more |more |these |your |the |this |further )*(messages|texts|text messages|msgs|sms|emails|reminders|notifications|texting) `},
	{"en", ClearRevocation, ` (i want to|i would like to|id like to|want to|wanna|i wish to|how do i|how can i|let me) (unsubscribe|opt out|cancel (this|the|my) (subscription|texts|messages)) `},
	{"en", ClearRevocation, ` revoke (my )?(consent|permission) | withdraw (my )?(consent|permission) `},
	{"en", ClearRevocation, ` (unsubscribe|unsubcribe|unsubscibe|unsuscribe|unsubscrib|unsubscrube|usubscribe) `},
	{"en", ClearRevocation, `^ (stp|sotp|stpo|stopp|stoop|sto|stoo) $`},
	{"es", ClearRevocation, ` no (mas|quiero mas|quiero recibir( mas)?) (mensajes|textos|sms|correos|recordatorios) `},
	{"es", ClearRevocation, ` no (me )?(envien|envies|envie|manden|mandes|mande|escriban|escribas|escriba|contacten|contactes) (mas|ningun|nada) `},
	{"es", ClearRevocation, ` (dejen|deja|deje|dejar) de (enviar|mandar|escribir|contactar|enviarme|mandarme|escribirme|contactarme) `},
	{"es", ClearRevocation, ` (dar|darme|denme|deme|dame|quiero darme) de baja | cancelar (la |mi )?suscripcion | desuscribir(me)? | (quitenme|borrenme|eliminenme|saquenme|sacame) de (la|su|esta|sus) lista `},
	{"es", ClearRevocation, `^ (baja|alto|parar|cancelar|detener|detente) $`},
	{"zh", ClearRevocation, `退订|取消订阅|退出订阅|取消短信|拒收|不再接收|不想(再)?收到|(不要|别|不用|请勿|勿|停止)(再)?(给我)?(发送|推送|发(了|短信|消息|信息|这些|啦)|发$|联系我)|^停止$`},

	// Possible revocation: may be a wish to stop; the patient is asked.
	{"en", PossibleRevocation, ` leave me alone | go away | not interested | wrong number | enough already |^ enough $|^ no more $| spam | harass | who is this stop `},
	{"en", PossibleRevocation, ` stop (it|this|that|now|already|pls|please) | make it stop | (why|how) (do|are) (you|u) (keep )?(texting|messaging) `},
	{"es", PossibleRevocation, ` (dejame|dejenme|deje) en paz | ya basta |^ basta $| no me molest(en|es|e) |^ para $| no me interesa `},
	{"zh", PossibleRevocation, `别烦|不要烦|烦死|骚扰|(别|不要|请勿|勿)(再)?打扰|^够了$|受够了|^停$|不感兴趣`},
}

// compiled is phrases compiled once; a bad pattern fails at start-up.
var compiled = func() []*regexp.Regexp {
	out := make([]*regexp.Regexp, len(phrases))
	for i, p := range phrases {
		out[i] = regexp.MustCompile(p.pattern)
	}
	return out
}()

// padding is what a per se keyword may come with and still be one:
// courtesies and fillers ("please stop", "Stop now!!", "退订谢谢").
var padding = map[string]bool{
	"please": true, "pls": true, "plz": true, "plse": true, "thanks": true, "thank": true, "you": true, "thx": true,
	"ty": true, "ok": true, "okay": true, "now": true, "just": true, "already": true, "asap": true,
	"por": true, "favor": true, "gracias": true, "ya": true,
}

// hanPadding are the Chinese courtesies around a keyword, as prefixes or
// suffixes of the same word (Chinese has no spaces).
var hanPrefixes = []string{"麻烦", "请"}
var hanSuffixes = []string{"谢谢你", "谢谢", "谢了", "了", "吧", "哦"}

// maxRecognised is how much of a reply the recogniser reads, in runes: a
// wish to stop is said at the start of a text, and a long message is not
// searched for phrases.
const maxRecognised = 400

// NormaliseText is the reply as the recogniser reads it: compatibility
// forms folded (full-width letters, ligatures), lower case, accents and
// apostrophes dropped, punctuation, symbols and emoji made spaces, letters
// repeated three times or more made one ("stooop"), a word repeated in a
// row kept once ("stop stop stop"), words separated by one space.
func NormaliseText(body string) string {
	if len(body) > 4*maxRecognised {
		body = body[:4*maxRecognised]
	}
	mapped := make([]rune, 0, len(body))
	for _, r := range norm.NFKD.String(strings.ToValidUTF8(body, " ")) {
		switch {
		case unicode.Is(unicode.Mn, r) || r == '\'' || r == '’' || r == '`' || r == '‘':
			continue
		case unicode.IsLetter(r) || unicode.IsNumber(r):
			mapped = append(mapped, unicode.ToLower(r))
		default:
			mapped = append(mapped, ' ')
		}
	}
	if len(mapped) > maxRecognised {
		mapped = mapped[:maxRecognised]
	}
	words := strings.Fields(string(mapped))
	out := words[:0]
	for _, w := range words {
		w = squeeze(w)
		if len(out) > 0 && out[len(out)-1] == w {
			continue
		}
		out = append(out, w)
	}
	return strings.Join(out, " ")
}

// squeeze makes a letter repeated three times or more in a row one
// ("stooop", "stopppp"); two stay ("too").
func squeeze(w string) string {
	r := []rune(w)
	out := r[:0]
	for i := 0; i < len(r); {
		j := i
		for j < len(r) && r[j] == r[i] {
			j++
		}
		if j-i >= 3 {
			out = append(out, r[i])
		} else {
			out = append(out, r[i:j]...)
		}
		i = j
	}
	return string(out)
}

// Recognise reads a patient's reply for a revocation of consent. It does
// not know what the reply answers: the caller reads a reply that picks an
// option of an open question as that answer, whatever Recognise says.
func Recognise(body string) Revocation {
	text := NormaliseText(body)
	if text == "" {
		return Revocation{}
	}
	if lang, ok := perSe(text); ok {
		return Revocation{Outcome: PerSe, Lang: lang}
	}
	padded := " " + text + " "
	best := Revocation{}
	for i, p := range phrases {
		if !compiled[i].MatchString(padded) && !compiled[i].MatchString(text) {
			continue
		}
		if p.outcome == NotRevocation {
			return Revocation{}
		}
		if p.outcome > best.Outcome {
			best = Revocation{Outcome: p.outcome, Lang: p.lang}
		}
	}
	if best.Outcome == NotRevocation && shortWithStop(text) {
		best = Revocation{Outcome: PossibleRevocation, Lang: "en"}
	}
	return best
}

// shortWithStop says whether a short reply has the word stop in it ("stop
// it", "ok stop"): possibly a wish to stop, after the controls.
func shortWithStop(text string) bool {
	words := strings.Fields(text)
	if len(words) > 6 {
		return false
	}
	for _, w := range words {
		if w == "stop" {
			return true
		}
	}
	return false
}

// perSe says whether the normalised text is one opt-out keyword with only
// padding around it, and the keyword's language.
func perSe(text string) (string, bool) {
	var kept []string
	for _, w := range strings.Fields(text) {
		if padding[w] {
			continue
		}
		kept = append(kept, trimHan(w))
	}
	if len(kept) == 0 {
		return "", false
	}
	word := strings.ToUpper(strings.Join(kept, ""))
	if keywords[word] != OptOut {
		return "", false
	}
	return keywordLang(word), true
}

func trimHan(w string) string {
	for _, p := range hanPrefixes {
		if rest, ok := strings.CutPrefix(w, p); ok && rest != "" {
			w = rest
		}
	}
	for _, s := range hanSuffixes {
		if rest, ok := strings.CutSuffix(w, s); ok && rest != "" {
			w = rest
		}
	}
	return w
}

// Clarifications ask a patient whose reply may be a wish to stop to say so
// with the keyword, per language. STOP stops every clinic on the number,
// so the text names the number, not one clinic.
var Clarifications = map[string]string{
	"en": "Do you want no more messages? Reply STOP to stop all messages from this number.",
	"es": "¿No desea recibir más mensajes? Responda STOP para dejar de recibir todos los mensajes de este número.",
	"zh": "您是否不想再收到消息？回复 退订 即可停止接收本号码的所有消息。",
}
