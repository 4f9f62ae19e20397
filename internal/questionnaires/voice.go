package questionnaires

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
)

// A questionnaire by voice is one call (an IVR): the call greets the
// patient, then asks each question as the answers come, in the same call
// (channels.CallFlow): a choice by one key, a number by keys ended with
// #, free text as a recording. An answer that does not fit is asked again
// (MaxReasks times at most), as on SMS. Silence is asked again too, and
// after MaxReasks the call says it will call again and ends. A call that
// ends before the last answer (silence, or the patient hangs up) leaves
// the response in progress at its question; the reminder calls again
// from there, and the expiry ends it.

// ChannelVoice is the voice channel.
const ChannelVoice = "voice"

// maxNumberDigits bounds the keys of a number answer.
const maxNumberDigits = 8

// The call's words around the questions, per locale ("en" the fallback).
var callPhrases = map[string]map[string]string{
	"en": {
		"greeting":   "Hello. This is a call from your care team with the %s.",
		"reminder":   "Hello again. This is a reminder from your care team: the %s is not finished yet.",
		"how":        "Please answer each question with your phone's keypad.",
		"press":      "For %s, press %s.",
		"number":     "Enter a number from %s to %s, then press the pound key. For a decimal point, press star.",
		"record":     "After the tone, say your answer, then press the pound key.",
		"retry":      "Sorry, that answer does not fit the question.",
		"silence":    "Sorry, we did not hear an answer.",
		"later":      "We will call you again later. Goodbye.",
		"thanks":     "Thank you. Your answers were sent to your care team. Goodbye.",
		"incomplete": "Sorry, we could not take your answers, so this questionnaire is closed. Please contact your clinic if you need help. Goodbye.",
		"closed":     "This questionnaire is closed. If you need help, please contact your clinic. Goodbye.",
	},
	"zh-Hans": {
		"greeting":   "您好，这是您的医护团队打来的电话，进行《%s》。",
		"reminder":   "您好，这是您的医护团队的提醒：《%s》还没有完成。",
		"how":        "请用电话按键回答每个问题。",
		"press":      "%s，请按%s。",
		"number":     "请输入%s到%s之间的数字，然后按井号键。小数点请按星号键。",
		"record":     "请在提示音后说出您的回答，然后按井号键。",
		"retry":      "抱歉，这个回答不符合问题的要求。",
		"silence":    "抱歉，我们没有听到您的回答。",
		"later":      "我们稍后会再给您打电话。再见。",
		"thanks":     "谢谢。您的回答已发送给您的医护团队。再见。",
		"incomplete": "抱歉，我们无法记录您的回答，此问卷已关闭。如需帮助请联系您的诊所。再见。",
		"closed":     "此问卷已关闭。如需帮助请联系您的诊所。再见。",
	},
}

func callPhrase(locale, key string) string {
	if p, ok := callPhrases[locale][key]; ok {
		return p
	}
	return callPhrases["en"][key]
}

// callGreeting is what a questionnaire's call says first.
func callGreeting(def *Definition, locale string, reminder bool) string {
	key := "greeting"
	if reminder {
		key = "reminder"
	}
	var b strings.Builder
	b.WriteString(fmt.Sprintf(callPhrase(locale, key), def.Title.In(locale)))
	if intro := def.Intro.In(locale); intro != "" && !reminder {
		b.WriteString(" " + intro)
	}
	b.WriteString(" " + callPhrase(locale, "how"))
	return b.String()
}

// voiceKeys are the keys a choice question's options are pressed with:
// their own keys when every one is a single digit, else 1, 2, 3… in order.
func voiceKeys(q *Question) []string {
	keys := make([]string, len(q.Options))
	own := true
	for i, o := range q.Options {
		keys[i] = o.Key
		if len(o.Key) != 1 || o.Key[0] < '0' || o.Key[0] > '9' {
			own = false
		}
	}
	if !own {
		for i := range keys {
			keys[i] = strconv.Itoa(i + 1)
		}
	}
	return keys
}

// byKeypad refuses a questionnaire a call cannot ask: a choice of more
// than nine options that are not single digits.
func byKeypad(def *Definition) error {
	for i := range def.Questions {
		q := &def.Questions[i]
		if q.Type == TypeChoice && len(q.Options) > 9 && voiceKeys(q)[0] == "1" && q.Options[0].Key != "1" {
			return invalidField("channel", fmt.Sprintf("voice cannot ask question %s by keypad: more than 9 options that are not single digits", q.ID))
		}
	}
	return nil
}

// callStep is how a call asks question q of response r.
func callStep(r *Response, def *Definition, q *Question) channels.CallStep {
	loc := r.Locale
	st := channels.CallStep{Step: "q" + strconv.Itoa(r.Seq)}
	n := 1
	for i := range def.Questions {
		if def.Questions[i].ID == q.ID {
			n = i + 1
		}
	}
	prompt := strconv.Itoa(n) + ". " + q.Text.In(loc)
	switch q.Type {
	case TypeChoice:
		keys := voiceKeys(q)
		for i, o := range q.Options {
			prompt += " " + fmt.Sprintf(callPhrase(loc, "press"), o.Text.In(loc), keys[i])
		}
		st.Keys = strings.Join(keys, "")
	case TypeNumber:
		prompt += " " + fmt.Sprintf(callPhrase(loc, "number"), num(q.Min), num(q.Max))
		st.MaxDigits = maxNumberDigits
		if q.Max != nil {
			st.MaxDigits = min(maxNumberDigits, len(strconv.FormatFloat(*q.Max, 'f', 0, 64))+3)
		}
	default:
		prompt += " " + callPhrase(loc, "record")
		st.Record = true
	}
	st.Prompt = prompt
	return st
}

// callValue reads a call's answer to q: the option of the key pressed, a
// number keyed with * for a decimal point, or a recording.
func callValue(q *Question, a *ledger.Answer) (Value, bool) {
	switch q.Type {
	case TypeChoice:
		for i, k := range voiceKeys(q) {
			if a.Digits == k {
				return Value{Key: q.Options[i].Key}, true
			}
		}
		return Value{}, false
	case TypeNumber:
		d := strings.TrimSuffix(a.Digits, "#")
		if d == "" || strings.Count(d, "*") > 1 || strings.Contains(d, "#") {
			return Value{}, false
		}
		return Parse(q, strings.Replace(d, "*", ".", 1))
	}
	if a.RecordingSID == "" {
		return Value{}, false
	}
	return Value{Recording: a.RecordingSID}, true
}

// responseOfCall is the response a call's message asks for ("" when the
// message is not a questionnaire's call).
func responseOfCall(m *ledger.Message) string {
	if m.Channel != ChannelVoice || !strings.Contains(string(m.Metadata), `"questionnaire_response"`) {
		return ""
	}
	var meta struct {
		Response string `json:"questionnaire_response"`
	}
	if json.Unmarshal(m.Metadata, &meta) != nil {
		return ""
	}
	return meta.Response
}

// CallStep runs a questionnaire's call (channels.CallFlow): with no answer
// the question the response is at; with an answer to the current step,
// the next question, the same one again with an apology, or the end. An
// answer to a step that is not the current one (a request run again)
// changes nothing and gets the current question.
func (s *Service) CallStep(ctx context.Context, m *ledger.Message, step string, a *ledger.Answer) (channels.CallStep, bool, error) {
	id := responseOfCall(m)
	if id == "" {
		return channels.CallStep{}, false, nil
	}
	unlock, err := s.lock(ctx, m.Tenant, id)
	if err != nil {
		return channels.CallStep{}, true, err
	}
	defer unlock()
	r, err := s.GetResponse(ctx, m.Tenant, id)
	if errors.Is(err, ErrResponseNotFound) {
		return channels.CallStep{End: callPhrase(LocaleOf(m.Locale), "closed")}, true, nil
	}
	if err != nil {
		return channels.CallStep{}, true, err
	}
	if len(r.Pending) > 0 { // an earlier change died before its messages were made
		if err := s.commit(ctx, r); err != nil {
			return channels.CallStep{}, true, err
		}
	}
	def, err := s.Definition(ctx, r.Tenant, r.Questionnaire, r.Version)
	if err != nil {
		return channels.CallStep{}, true, err
	}
	ended := func() channels.CallStep {
		switch r.State {
		case StateCompleted:
			return channels.CallStep{End: callPhrase(r.Locale, "thanks")}
		case StateIncomplete:
			return channels.CallStep{End: callPhrase(r.Locale, "incomplete")}
		}
		return channels.CallStep{End: callPhrase(r.Locale, "closed")}
	}
	if r.State != StateInProgress {
		return ended(), true, nil
	}
	q := def.Question(r.Current)
	if q == nil {
		return channels.CallStep{}, true, fmt.Errorf("questionnaire %s v%d has no question %s", r.Questionnaire, r.Version, r.Current)
	}
	if a == nil || step != "q"+strconv.Itoa(r.Seq) {
		return callStep(r, def, q), true, nil
	}
	silent := a.Digits == "" && a.RecordingSID == ""
	v, ok := callValue(q, a)
	switch {
	case silent && r.Reasks >= MaxReasks:
		// Nobody answers (the phone put down?): the call ends, the
		// response waits at its question for the reminder's call.
		r.Reasks = 0
		r.Seq++
		s.schedule(ctx, r, def)
		if err := s.commit(ctx, r); err != nil {
			return channels.CallStep{}, true, err
		}
		return channels.CallStep{Say: callPhrase(r.Locale, "silence"), End: callPhrase(r.Locale, "later")}, true, nil
	case !ok && r.Reasks >= MaxReasks:
		s.end(r, StateIncomplete, "answers did not fit the question after it was asked again twice")
	case !ok:
		r.Reasks++
		r.Seq++
		s.schedule(ctx, r, def)
	default:
		next, err := s.take(ctx, r, def, q, v, s.now())
		if err != nil {
			return channels.CallStep{}, true, err
		}
		if next != "" {
			s.schedule(ctx, r, def)
		}
	}
	if err := s.commit(ctx, r); err != nil {
		return channels.CallStep{}, true, err
	}
	if r.State != StateInProgress {
		return ended(), true, nil
	}
	st := callStep(r, def, def.Question(r.Current))
	switch {
	case silent:
		st.Say = callPhrase(r.Locale, "silence")
	case !ok:
		st.Say = callPhrase(r.Locale, "retry")
	}
	return st, true, nil
}
