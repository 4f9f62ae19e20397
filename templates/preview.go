package templates

import (
	"fmt"
	"slices"
	"strings"

	"github.com/patientmsg/gateway/internal/sms"
)

// Preview is what a template renders to in every channel it has a form
// for, with everything wrong reported at once rather than as a first error.
type Preview struct {
	Template string `json:"template"`
	// Locale is the locale variant used; empty when none fits (see Problems).
	Locale string `json:"locale"`
	// Missing are variables some form needs that were not given and are not
	// optional; they render as visible {{name}} markers.
	Missing []string `json:"missing,omitempty"`
	// Unknown are variables given that the template does not declare.
	Unknown []string `json:"unknown,omitempty"`
	// Channels maps each channel the locale has a form for to its preview.
	Channels map[string]*ChannelPreview `json:"channels"`
	// PHI lists phi variables used where they are refused or warned about.
	PHI []PHIFinding `json:"phi,omitempty"`
	// Problems are the other reasons a send would fail: no locale variant,
	// invalid values (rendered as markers).
	Problems []string `json:"problems,omitempty"`
}

// ChannelPreview is one channel's rendered form.
type ChannelPreview struct {
	// Body is the SMS text, the voice text, the WeChat text or the email's
	// text part.
	Body    string      `json:"body,omitempty"`
	Subject string      `json:"subject,omitempty"`
	HTML    string      `json:"html,omitempty"`
	Voice   *VoiceForm  `json:"voice,omitempty"`
	WeChat  *WeChatForm `json:"wechat,omitempty"`
	// SMS gives the SMS body's encoding and cost.
	SMS *SMSStats `json:"sms_stats,omitempty"`
	// ExpectReply is the question sent with the message on this channel.
	ExpectReply *ExpectReply `json:"expect_reply,omitempty"`
	// Missing are the variables this form needs and was not given.
	Missing []string `json:"missing,omitempty"`
	// Problems are limits of the channel the rendered form breaks.
	Problems []string `json:"problems,omitempty"`
	// Sendable says whether Render would succeed for this channel with the
	// same arguments.
	Sendable bool `json:"sendable"`
}

// SMSStats describes how an SMS body will be sent, from sms.Analyze.
type SMSStats struct {
	// Encoding is "GSM-7" or "UCS-2".
	Encoding string `json:"encoding"`
	// Segments is the number of billable SMS parts.
	Segments int `json:"segments"`
	// Chars is the length in characters (code points).
	Chars int `json:"chars"`
	// Units is the encoded length: septets for GSM-7, UTF-16 units for UCS-2.
	Units int `json:"units"`
	// SegmentSize is the capacity of one segment in units: 160 or 153
	// (concatenated) for GSM-7, 70 or 67 for UCS-2.
	SegmentSize int `json:"segment_size"`
	// Remaining is how many more units (plain characters) fit before the
	// body needs another segment.
	Remaining int `json:"remaining"`
	// TooLong says the body is longer than Twilio's 1,600 characters.
	TooLong bool `json:"too_long,omitempty"`
}

// PHIFinding is a phi variable in a channel that refuses it by default.
type PHIFinding struct {
	Var     string `json:"var"`
	Channel string `json:"channel"`
	// Status is "refused", or "warning" when the tenant allows PHI there.
	Status string `json:"status"`
}

// PHI finding statuses.
const (
	PHIRefused = "refused"
	PHIWarning = "warning"
)

// Preview renders t in every channel the picked locale has a form for. It
// never fails: missing variables render as visible {{name}} markers and are
// listed, unknown variables and invalid values are listed (an invalid value
// renders as its marker), and PHI findings and channel limits are reported,
// so a developer sees everything at once. A channel's Sendable says whether
// Render would succeed for it.
func (t *Template) Preview(chain Chain, locale string, vars map[string]string, allowPHI bool) *Preview {
	p := &Preview{Template: t.Name, Channels: map[string]*ChannelPreview{}}
	loc, forms, err := chain.Pick(t, locale)
	if err != nil {
		p.Problems = append(p.Problems, err.Error())
		return p
	}
	p.Locale = loc
	decl := t.declared()
	good := make(map[string]string, len(vars))
	for _, name := range sortedKeys(vars) {
		switch msg := checkValue(vars[name]); {
		case decl[name] == nil:
			p.Unknown = append(p.Unknown, name)
		case msg != "":
			p.Problems = append(p.Problems, (&ValueError{Var: name, Problem: msg}).Error())
		default:
			good[name] = vars[name]
		}
	}
	withDefaults := t.valueOf(good, decl)
	value := func(name string) (string, bool) {
		if _, given := vars[name]; given {
			v, ok := good[name] // an invalid value renders as its marker
			return v, ok
		}
		return withDefaults(name)
	}
	missing := map[string]bool{}
	for _, ch := range Channels {
		if !forms.has(ch) {
			continue
		}
		cp := &ChannelPreview{}
		p.Channels[ch] = cp
		used, err := forms.uses(ch)
		if err != nil {
			cp.Problems = append(cp.Problems, err.Error())
			continue
		}
		phiRefused := false
		if phiChannel(ch) {
			for _, name := range phiUsed(decl, used) {
				f := PHIFinding{Var: name, Channel: ch, Status: PHIRefused}
				if allowPHI {
					f.Status = PHIWarning
				} else {
					phiRefused = true
				}
				p.PHI = append(p.PHI, f)
			}
		}
		out, miss, err := renderForm(forms, ch, value)
		if err != nil {
			cp.Problems = append(cp.Problems, err.Error())
			continue
		}
		for _, name := range dedupSorted(miss) {
			switch _, given := vars[name]; {
			case decl[name] == nil:
				cp.Problems = append(cp.Problems, fmt.Sprintf("{{%s}} is not declared by the template", name))
			case !given:
				cp.Missing = append(cp.Missing, name)
				missing[name] = true
			}
		}
		for _, pr := range checkOutput(ch, out) {
			cp.Problems = append(cp.Problems, pr.Field+" "+pr.Message)
		}
		switch ch {
		case ChannelSMS:
			cp.Body = out.SMS
			cp.SMS = smsStats(out.SMS)
		case ChannelVoice:
			cp.Body, cp.Voice = out.Voice.Text, out.Voice
		case ChannelWeChat:
			cp.Body, cp.WeChat = out.WeChat.Text, out.WeChat
		case ChannelEmail:
			cp.Body, cp.Subject, cp.HTML = out.Email.Text, out.Email.Subject, out.Email.HTML
		}
		if ch != ChannelEmail {
			cp.ExpectReply = t.ExpectReply.clone()
		}
		cp.Sendable = len(cp.Missing) == 0 && len(cp.Problems) == 0 && !phiRefused &&
			len(p.Unknown) == 0 && len(good) == len(vars)
	}
	p.Missing = sortedKeys(missing)
	if len(p.Missing) == 0 {
		p.Missing = nil
	}
	return p
}

// smsStats analyses an SMS body.
func smsStats(body string) *SMSStats {
	info := sms.Analyze(body)
	st := &SMSStats{
		Encoding: string(info.Encoding),
		Segments: info.Segments,
		Chars:    info.Chars,
		Units:    info.Units,
		TooLong:  info.Chars > sms.MaxChars,
	}
	single, multi := 160, 153
	if info.Encoding == sms.UCS2 {
		single, multi = 70, 67
	}
	st.SegmentSize = single
	if info.Segments > 1 {
		st.SegmentSize = multi
	}
	st.Remaining = remainingUnits(body, info)
	return st
}

// remainingUnits is how many one-unit characters can be added to body
// before it needs another segment. It is measured with sms.Analyze itself
// (a binary search over appended characters), so it accounts for two-unit
// characters that were moved whole to the next segment.
func remainingUnits(body string, info sms.Info) int {
	segs := info.Segments
	if segs == 0 {
		return 160
	}
	fits := func(k int) bool { return sms.Analyze(body+strings.Repeat("a", k)).Segments == segs }
	lo, hi := 0, 161 // fits(lo) holds; fits(hi) does not (no segment holds 161 units)
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if fits(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// dedupSorted returns the distinct strings of s, sorted.
func dedupSorted(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}
