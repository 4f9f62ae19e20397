package consent

import "strings"

// Action is what a keyword reply asks for.
type Action int

// Keyword actions.
const (
	NoKeyword Action = iota
	OptOut
	OptIn
	Help
)

// keywords are matched against the whole message, case- and
// space-insensitively, as carriers do (TCPA/CTIA; 退订, TD and T are the
// common opt-out words of Chinese carriers).
var keywords = map[string]Action{
	"STOP": OptOut, "STOPALL": OptOut, "UNSUBSCRIBE": OptOut, "CANCEL": OptOut, "END": OptOut,
	"QUIT": OptOut, "REVOKE": OptOut, "OPTOUT": OptOut, "退订": OptOut, "TD": OptOut, "T": OptOut,
	"START": OptIn, "UNSTOP": OptIn, "YES": OptIn,
	"HELP": Help, "INFO": Help,
}

// Keyword says whether a whole message is a keyword, and in which
// language to confirm it ("zh" for the Chinese carriers' words, else "en").
// The message is read as NormaliseText reads it, its words joined: case,
// width, punctuation, emoji and a word repeated in a row do not matter
// ("Stop!!!", "STOP STOP STOP", "opt-out").
func Keyword(body string) (Action, string) {
	norm := strings.ToUpper(strings.ReplaceAll(NormaliseText(body), " ", ""))
	a, ok := keywords[norm]
	if !ok {
		return NoKeyword, ""
	}
	return a, keywordLang(norm)
}

// keywordLang is the language of a keyword (upper case).
func keywordLang(k string) string {
	if k == "退订" || k == "TD" || k == "T" {
		return "zh"
	}
	return "en"
}

// Replies are the one confirmation sent for a keyword, per language.
var Replies = map[Action]map[string]string{
	OptOut: {
		"en": "You are unsubscribed and will get no more messages from this number. Reply START to resubscribe.",
		"es": "Se ha dado de baja y no recibirá más mensajes de este número. Responda START para volver a suscribirse.",
		"zh": "您已退订，将不再收到本号码发送的消息。回复 START 可重新订阅。",
	},
	OptIn: {
		"en": "You are subscribed again. Reply STOP to unsubscribe.",
		"zh": "您已重新订阅。回复 退订 可取消。",
	},
	Help: {
		"en": "This number sends messages from your care team. Reply STOP to unsubscribe. For medical help call your clinic; in an emergency call your local emergency number.",
		"zh": "本号码发送您的医疗团队的消息。回复 退订 可取消订阅。如需医疗帮助请联系您的诊所；紧急情况请拨打急救电话。",
	},
}
