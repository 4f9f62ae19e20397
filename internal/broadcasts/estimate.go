package broadcasts

// The broadcast preview: before a crisis team sends a message to thousands
// of people over a cascade of channels (WeChat → SMS → voice), it shows, per
// channel, how many recipients it reaches, how many SMS segments the text
// costs, how long each channel's senders take at their configured rate and
// daily quota, and what it costs — so the team can add senders or change the
// cascade before sending. Everything here is a pure function of its input.

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/sms"
)

// Prices are what providers charge, in Currency (configurable by the
// gateway's operator).
type Prices struct {
	Currency      string  `json:"currency"`
	SMSSegment    float64 `json:"sms_segment"`
	VoiceMinute   float64 `json:"voice_minute"`
	WeChatMessage float64 `json:"wechat_message"`
	EmailMessage  float64 `json:"email_message"`
}

// SenderCapacity is a channel's sender as configured: its rate (units per
// second: SMS segments, calls, messages), its daily quota (0: none) and what
// is already used today. Burst is informational: the estimate counts time at
// PerSecond only.
type SenderCapacity struct {
	PerSecond float64
	PerDay    int64
	UsedToday int64
	Burst     int
}

// EstimateRecipient is one recipient as the preview sees it: the channels
// they can be reached on and their locale.
type EstimateRecipient struct {
	Channels []string
	Locale   string
}

// EstimateInput is everything the estimate needs.
type EstimateInput struct {
	// Cascade is the channel order, e.g. ["wechat","sms","voice"]. Names
	// are compared case-insensitively; a repeated channel counts once.
	Cascade    []string
	Recipients []EstimateRecipient
	// Texts is channel → locale → the rendered text (the SMS body, the
	// voice call's spoken text, the WeChat or email body). A recipient's
	// locale is looked up as given, then case-insensitively, then by its
	// shorter forms ("zh-Hans-CN", "zh-Hans", "zh"), then under "", then
	// the first locale in sorted order. Empty texts are skipped.
	Texts map[string]map[string]string
	// Senders is each channel's sender capacity, by channel.
	Senders map[string]SenderCapacity
	Prices  Prices
	// CallMinutes is the expected minutes per call; 0: estimated from the
	// voice text at 150 words per minute (Chinese and Japanese characters
	// at 250 per minute), rounded up to whole minutes as Twilio bills, at
	// least 1.
	CallMinutes float64
	// AckRate is the share of recipients expected to acknowledge on each
	// channel before the next is tried (0: assume nobody does, the worst
	// case: every recipient is tried on every channel they have). It is
	// clamped to [0, 1].
	AckRate float64
}

// ChannelEstimate is the preview of one channel of the cascade.
type ChannelEstimate struct {
	Channel string `json:"channel"`
	// First counts the recipients for whom this is the first cascade
	// channel they have.
	First int `json:"first"`
	// Reachable counts the recipients who have this channel at all.
	Reachable int `json:"reachable"`
	// Expected is the expected number of sends on this channel given the
	// cascade and AckRate.
	Expected float64 `json:"expected"`
	// SMS is, for the SMS channel, one row per recipient locale: the
	// encoding, segments per message and recipients who have SMS.
	SMS []SMSLocale `json:"sms,omitempty"`
	// Units is the expected sender units: segments for SMS, calls for
	// voice, messages otherwise.
	Units float64 `json:"units"`
	// Duration is the time to send Units at the sender's rate, e.g.
	// "8m20s" ("unknown" when no rate is configured); Seconds is the same
	// in seconds (0 when unknown).
	Duration string  `json:"duration"`
	Seconds  float64 `json:"seconds"`
	// QuotaLeft is what is left of the sender's daily quota today, when it
	// has one.
	QuotaLeft *int64 `json:"quota_left,omitempty"`
	// OverQuota: the expected units exceed today's quota left, so the
	// rest waits for the quota to reset at midnight.
	OverQuota bool    `json:"over_quota"`
	Cost      float64 `json:"cost"`
	// Warnings are plain-words advice: non-GSM text, slow channel, quota,
	// missing text, rate or price.
	Warnings []string `json:"warnings,omitempty"`
}

// SMSLocale is how the SMS text of one recipient locale is sent.
type SMSLocale struct {
	Locale     string `json:"locale"`
	Encoding   string `json:"encoding"`
	Segments   int    `json:"segments"`
	Recipients int    `json:"recipients"`
}

// Estimate is the preview of a whole broadcast.
type Estimate struct {
	Recipients int `json:"recipients"`
	// Unreachable counts the recipients who have none of the cascade's
	// channels.
	Unreachable int               `json:"unreachable"`
	Channels    []ChannelEstimate `json:"channels"`
	// FirstWave is the time until every recipient got their first
	// channel's message (channels run in parallel on their own senders);
	// "unknown" when a channel someone starts on has no rate configured.
	FirstWave string  `json:"first_wave"`
	Cost      float64 `json:"cost"`
	Currency  string  `json:"currency"`
	// Warnings concern the broadcast as a whole (recipients who cannot be
	// reached, an empty cascade).
	Warnings []string `json:"warnings,omitempty"`
}

// Estimate constants.
const (
	estSlowSeconds       = 600 // a channel taking longer is "slow"
	estWordsPerMinute    = 150 // spoken English (and other space-separated text)
	estCJKCharsPerMinute = 250 // spoken Chinese (and Japanese) characters
	estLongCallMinutes   = 3   // warn about calls estimated at least this long
)

// estText is what one (channel, locale) text costs per send.
type estText struct {
	found   bool
	text    string
	info    sms.Info // SMS only
	minutes float64  // voice only: billed minutes per call
}

// estChannel accumulates one channel's estimate.
type estChannel struct {
	name       string
	first      int
	reachable  int
	expected   float64
	units      float64
	firstUnits float64
	cost       float64
	locales    map[string]int // recipients having the channel, by locale
	texts      map[string]estText
}

// EstimateBroadcast previews a broadcast: per channel of the cascade, the
// recipients, SMS segments and encoding, the time its sender needs at its
// rate and daily quota, and the cost at in.Prices.
//
// A recipient is sent the first cascade channel they have; with AckRate a,
// the expected share of recipients reaching the k-th cascade channel they
// have is (1-a)^(k-1). Each channel's senders work in parallel with the
// others', so a channel's Duration counts only its own expected units, and
// FirstWave is the longest time any channel needs for the units of the
// recipients who start on it.
func EstimateBroadcast(in EstimateInput) Estimate {
	ack := in.AckRate
	if !(ack > 0) { // also NaN
		ack = 0
	}
	ack = min(ack, 1)

	// The cascade, normalized and without repeats.
	var cascade []*estChannel
	index := map[string]int{}
	for _, name := range in.Cascade {
		name = estNorm(name)
		if name == "" {
			continue
		}
		if _, dup := index[name]; dup {
			continue
		}
		index[name] = len(cascade)
		cascade = append(cascade, &estChannel{name: name, locales: map[string]int{}, texts: map[string]estText{}})
	}

	out := Estimate{Recipients: len(in.Recipients), Currency: in.Prices.Currency, Channels: []ChannelEstimate{}}
	if len(cascade) == 0 {
		out.Warnings = append(out.Warnings, "the cascade names no channel: nobody would be sent anything")
	}

	// otherChannels counts, among unreachable recipients, the channels
	// they do have, to suggest adding one to the cascade.
	otherChannels := map[string]int{}
	have := make([]bool, len(cascade))
	for _, r := range in.Recipients {
		clear(have)
		for _, c := range r.Channels {
			if i, ok := index[estNorm(c)]; ok {
				have[i] = true
			}
		}
		k := 0 // cascade channels of this recipient so far
		for i, ch := range cascade {
			if !have[i] {
				continue
			}
			t := ch.text(in, r.Locale)
			w := math.Pow(1-ack, float64(k))
			per := ch.unitsPerSend(t)
			ch.reachable++
			ch.locales[r.Locale]++
			ch.expected += w
			ch.units += w * per
			ch.cost += w * ch.costPerSend(t, in.Prices)
			if k == 0 {
				ch.first++
				ch.firstUnits += per
			}
			k++
		}
		if k == 0 {
			out.Unreachable++
			seen := map[string]bool{}
			for _, c := range r.Channels {
				if c = estNorm(c); c != "" && !seen[c] {
					seen[c] = true
					otherChannels[c]++
				}
			}
		}
	}

	if out.Unreachable > 0 && len(cascade) > 0 {
		names := make([]string, len(cascade))
		for i, ch := range cascade {
			names[i] = ch.name
		}
		w := fmt.Sprintf("%s none of the cascade's channels (%s): they will not be sent anything",
			estPlural(out.Unreachable, "recipient has", "recipients have"), strings.Join(names, ", "))
		if len(otherChannels) > 0 {
			var others []string
			for _, c := range slices.Sorted(maps.Keys(otherChannels)) {
				others = append(others, estGroup(int64(otherChannels[c]))+" "+c)
			}
			w += "; add to the cascade a channel they have (" + strings.Join(others, ", ") + ")"
		}
		out.Warnings = append(out.Warnings, w)
	}

	// Without any price, one warning says so; with some, each channel
	// missing its price is pointed out.
	p := in.Prices
	pricesSet := p.SMSSegment != 0 || p.VoiceMinute != 0 || p.WeChatMessage != 0 || p.EmailMessage != 0
	if !pricesSet && out.Recipients > out.Unreachable {
		out.Warnings = append(out.Warnings, "no prices are configured: costs show as 0")
	}

	firstWave, waveKnown := 0.0, true
	var total float64
	for i, ch := range cascade {
		ce := ChannelEstimate{
			Channel:   ch.name,
			First:     ch.first,
			Reachable: ch.reachable,
			Expected:  estRound(ch.expected, 6),
			Units:     estRound(ch.units, 6),
			Cost:      estRound(ch.cost, 6),
		}
		total += ch.cost
		ce.Warnings = append(ce.Warnings, ch.textWarnings(in, &ce)...)

		sender, ok := in.Senders[ch.name]
		if !ok {
			// Senders may be keyed in another case.
			for _, k := range slices.Sorted(maps.Keys(in.Senders)) {
				if estNorm(k) == ch.name {
					sender = in.Senders[k]
					break
				}
			}
		}
		rate := sender.PerSecond
		switch {
		case ch.units == 0:
			ce.Duration = estDuration(0)
		case !(rate > 0): // also NaN
			ce.Duration = "unknown"
			ce.Warnings = append(ce.Warnings, fmt.Sprintf("no sender rate is configured for %s: the time to send cannot be estimated", ch.name))
		default:
			secs := ch.units / rate
			if math.IsInf(rate, 1) {
				secs = 0
			}
			ce.Seconds = estRound(secs, 3)
			ce.Duration = estDuration(secs)
			if secs > estSlowSeconds {
				ce.Warnings = append(ce.Warnings, fmt.Sprintf("at %s this takes %s: %s",
					estRate(rate, ch.unitName()), ce.Duration, ch.speedAdvice(cascade[:i])))
			}
		}
		if ch.first > 0 {
			if rate > 0 {
				if !math.IsInf(rate, 1) {
					firstWave = max(firstWave, ch.firstUnits/rate)
				}
			} else if ch.firstUnits > 0 {
				waveKnown = false
			}
		}

		if sender.PerDay > 0 {
			left := max(sender.PerDay-sender.UsedToday, 0)
			ce.QuotaLeft = &left
			if ch.units > float64(left)+1e-9 {
				ce.OverQuota = true
				rest := int64(math.Ceil(ch.units - float64(left) - 1e-9))
				w := fmt.Sprintf("over the daily quota: %s expected, %s left today (quota %s a day); the remaining %s wait until the quota resets at midnight",
					estUnits(int64(math.Ceil(ch.units-1e-9)), ch.unitName()), estGroup(left), estGroup(sender.PerDay), estGroup(rest))
				if days := (rest + sender.PerDay - 1) / sender.PerDay; days > 1 {
					w += fmt.Sprintf(" (%d more days at %s a day)", days, estGroup(sender.PerDay))
				}
				w += ": add senders or move recipients to another channel"
				ce.Warnings = append(ce.Warnings, w)
			}
		}

		if ch.units > 0 && ch.price(in.Prices) == 0 && ch.known() && pricesSet {
			ce.Warnings = append(ce.Warnings, fmt.Sprintf("no price is configured for %s: its cost shows as 0", ch.priceName()))
		}
		out.Channels = append(out.Channels, ce)
	}
	out.Cost = estRound(total, 6)
	if waveKnown {
		out.FirstWave = estDuration(firstWave)
	} else {
		out.FirstWave = "unknown"
	}
	return out
}

// known reports whether the channel is one the gateway sends on.
func (ch *estChannel) known() bool {
	_, ok := channels.SpecOf(ch.name)
	return ok
}

// text resolves and caches the channel's text for a recipient locale.
func (ch *estChannel) text(in EstimateInput, locale string) estText {
	if t, ok := ch.texts[locale]; ok {
		return t
	}
	var t estText
	t.text, t.found = estLookup(estTexts(in.Texts, ch.name), locale)
	switch ch.name {
	case "sms":
		if t.found {
			t.info = sms.Analyze(t.text)
		}
	case "voice":
		switch {
		case in.CallMinutes > 0 && !math.IsInf(in.CallMinutes, 0):
			t.minutes = in.CallMinutes
		case t.found:
			t.minutes = estCallMinutes(t.text)
		default:
			t.minutes = 1
		}
	}
	ch.texts[locale] = t
	return t
}

// unitsPerSend is the sender units one send of t costs: SMS segments
// (1 when there is no text to count), one call, one message.
func (ch *estChannel) unitsPerSend(t estText) float64 {
	if ch.name == "sms" && t.info.Segments > 0 {
		return float64(t.info.Segments)
	}
	return 1
}

// costPerSend is the price of one send of t.
func (ch *estChannel) costPerSend(t estText, p Prices) float64 {
	if ch.name == "voice" {
		return t.minutes * p.VoiceMinute
	}
	return ch.unitsPerSend(t) * ch.price(p)
}

// price is the channel's unit price (per segment, minute or message).
func (ch *estChannel) price(p Prices) float64 {
	switch ch.name {
	case "sms":
		return p.SMSSegment
	case "voice":
		return p.VoiceMinute
	case "wechat":
		return p.WeChatMessage
	case "email":
		return p.EmailMessage
	}
	return 0
}

func (ch *estChannel) priceName() string {
	if spec, ok := channels.SpecOf(ch.name); ok {
		return spec.Unit
	}
	return ch.name
}

// unitName is the singular name of the channel's sender unit.
func (ch *estChannel) unitName() string {
	switch ch.name {
	case "sms":
		return "segment"
	case "voice":
		return "call"
	}
	return "message"
}

// speedAdvice says how to make a slow channel faster; before is the part of
// the cascade tried before it.
func (ch *estChannel) speedAdvice(before []*estChannel) string {
	wechatFirst := slices.ContainsFunc(before, func(c *estChannel) bool { return c.name == "wechat" })
	switch ch.name {
	case "sms":
		if wechatFirst {
			return "add senders (a Messaging Service with more numbers)"
		}
		return "add senders (a Messaging Service with more numbers) or use WeChat first"
	case "voice":
		return "add caller numbers or reach more recipients by WeChat or SMS first"
	case "wechat":
		return "raise the account's rate or add official accounts"
	case "email":
		return "add SMTP relays or raise their rate"
	}
	return "add senders"
}

// textWarnings reports, and for SMS fills in ce.SMS, what the channel's
// texts cost per locale.
func (ch *estChannel) textWarnings(in EstimateInput, ce *ChannelEstimate) []string {
	var warns []string
	if !ch.known() && ch.reachable > 0 {
		warns = append(warns, fmt.Sprintf("%q is not a channel the gateway sends on: counted as one message per send, without a price", ch.name))
	}
	locales := slices.Sorted(maps.Keys(ch.locales))
	var missing []string
	for _, loc := range locales {
		t := ch.texts[loc]
		n := ch.locales[loc]
		if !t.found {
			missing = append(missing, estLocaleName(loc))
		}
		switch ch.name {
		case "sms":
			info := t.info
			segs := info.Segments
			enc := string(info.Encoding)
			if !t.found {
				segs, enc = 1, string(sms.GSM7)
			}
			ce.SMS = append(ce.SMS, SMSLocale{Locale: loc, Encoding: enc, Segments: segs, Recipients: n})
			if t.found && info.Encoding == sms.UCS2 {
				warns = append(warns, estUCS2Warning(loc, t.text, info, n))
			}
			if t.found && info.Chars > sms.MaxChars {
				warns = append(warns, fmt.Sprintf("%s is %d characters, over the %d Twilio accepts: it will be refused",
					estTextName("SMS text", loc, t.text), info.Chars, sms.MaxChars))
			}
		case "voice":
			if t.found && in.CallMinutes <= 0 && t.minutes >= estLongCallMinutes {
				warns = append(warns, fmt.Sprintf("%s (%s) takes about %d minutes to speak: each call is billed %d minutes; a shorter text costs less and is more likely heard to the end",
					estTextName("voice text", loc, t.text), estPlural(n, "recipient", "recipients"), int(t.minutes), int(t.minutes)))
			}
		}
	}
	if len(missing) > 0 {
		// WeChat and email cost the same whatever the text; SMS and
		// estimated call lengths need it.
		switch {
		case ch.name == "sms":
			warns = append(warns, fmt.Sprintf("no SMS text for %s: counted as 1 segment per message", estList(missing)))
		case ch.name == "voice" && in.CallMinutes <= 0:
			warns = append(warns, fmt.Sprintf("no voice text for %s: calls counted as 1 minute each", estList(missing)))
		}
	}
	return warns
}

// estUCS2Warning explains why an SMS text is UCS-2 and what it costs.
func estUCS2Warning(loc, text string, info sms.Info, recipients int) string {
	limits := "UCS-2: 70 characters fit in one segment, 67 per segment when longer"
	if info.Segments <= 1 {
		limits = "UCS-2: at most 70 characters fit in one segment"
	}
	// A few stray characters (a curly quote, an emoji) in otherwise GSM-7
	// text: name them and what replacing them would save.
	var odd []rune
	plain := []rune(text)
	for i, r := range plain {
		if sms.Analyze(string(r)).Encoding == sms.UCS2 {
			odd = append(odd, r)
			plain[i] = '?'
		}
	}
	if !estCJK(text) && len(odd) <= 5 {
		var names []string
		for _, r := range odd {
			if n := fmt.Sprintf("%q (U+%04X)", string(r), r); !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
		w := fmt.Sprintf("%s (%s) is sent as UCS-2 because of %s, not in the GSM-7 alphabet: %s per message (%s)",
			estTextName("SMS text", loc, text), estPlural(recipients, "recipient", "recipients"), estList(names),
			estPlural(info.Segments, "segment", "segments"), limits)
		if alt := sms.Analyze(string(plain)); alt.Segments < info.Segments {
			w += fmt.Sprintf("; replacing it would take %s", estPlural(alt.Segments, "segment", "segments"))
		}
		return w
	}
	return fmt.Sprintf("%s (%s): %s per message (%s)",
		estTextName("SMS text", loc, text), estPlural(recipients, "recipient", "recipients"),
		estPlural(info.Segments, "segment", "segments"), limits)
}

// estTextName names a locale's text for warnings, e.g. `SMS text for "en"`,
// `Chinese SMS text for "zh-CN"`, "Chinese SMS text" (no locale).
func estTextName(what, loc, text string) string {
	l := strings.ToLower(loc)
	if estCJK(text) && (l == "" || l == "zh" || strings.HasPrefix(l, "zh-") || strings.HasPrefix(l, "zh_")) {
		if loc == "" {
			return "Chinese " + what
		}
		return "Chinese " + what + " for " + strconv.Quote(loc)
	}
	return what + " for " + estLocaleName(loc)
}

func estLocaleName(loc string) string {
	if loc == "" {
		return "recipients without a locale"
	}
	return strconv.Quote(loc)
}

// estCJK reports whether text contains Chinese (Han) or Japanese kana
// characters.
func estCJK(text string) bool {
	for _, r := range text {
		if estCJKRune(r) {
			return true
		}
	}
	return false
}

func estCJKRune(r rune) bool {
	return unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana)
}

// estCallMinutes estimates the billed minutes of a call speaking text:
// Chinese (and Japanese) characters at 250 a minute, words of other text at
// 150 a minute, rounded up to whole minutes as Twilio bills, at least 1.
func estCallMinutes(text string) float64 {
	var cjk int
	rest := strings.Map(func(r rune) rune {
		if estCJKRune(r) {
			cjk++
			return ' '
		}
		return r
	}, text)
	var words int
	for _, f := range strings.Fields(rest) {
		// Punctuation alone (a dash, Chinese punctuation) is not a word.
		if strings.ContainsFunc(f, func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }) {
			words++
		}
	}
	m := float64(cjk)/estCJKCharsPerMinute + float64(words)/estWordsPerMinute
	return max(1, math.Ceil(m-1e-9))
}

// estTexts returns the channel's texts by locale, the channel name matched
// case-insensitively when not found as is.
func estTexts(texts map[string]map[string]string, channel string) map[string]string {
	if t, ok := texts[channel]; ok {
		return t
	}
	for _, k := range slices.Sorted(maps.Keys(texts)) {
		if estNorm(k) == channel {
			return texts[k]
		}
	}
	return nil
}

// estLookup finds the non-empty text for locale: as given, then
// case-insensitively, then its shorter forms ("zh-Hans-CN" → "zh-Hans" →
// "zh"), then "", then the first locale in sorted order.
func estLookup(texts map[string]string, locale string) (string, bool) {
	if len(texts) == 0 {
		return "", false
	}
	get := func(loc string) (string, bool) {
		if t := texts[loc]; t != "" {
			return t, true
		}
		for _, k := range slices.Sorted(maps.Keys(texts)) {
			if texts[k] != "" && strings.EqualFold(estLocaleKey(k), estLocaleKey(loc)) {
				return texts[k], true
			}
		}
		return "", false
	}
	for loc := strings.TrimSpace(locale); loc != ""; {
		if t, ok := get(loc); ok {
			return t, true
		}
		i := strings.LastIndexAny(loc, "-_")
		if i < 0 {
			break
		}
		loc = loc[:i]
	}
	if t := texts[""]; t != "" {
		return t, true
	}
	for _, k := range slices.Sorted(maps.Keys(texts)) {
		if texts[k] != "" {
			return texts[k], true
		}
	}
	return "", false
}

// estLocaleKey makes "zh_CN" and "zh-cn" compare equal to "zh-CN".
func estLocaleKey(loc string) string {
	return strings.ReplaceAll(strings.TrimSpace(loc), "_", "-")
}

func estNorm(channel string) string {
	return strings.ToLower(strings.TrimSpace(channel))
}

// estDuration formats seconds compactly, rounded up to whole seconds below
// an hour and truncated to the minute or hour above: "0s", "45s", "8m20s",
// "8m", "2h46m", "2h", "1d3h", "2d".
func estDuration(seconds float64) string {
	if math.IsNaN(seconds) || math.IsInf(seconds, 0) {
		return "unknown"
	}
	if seconds <= 0 {
		return "0s"
	}
	s := int64(math.Ceil(seconds - 1e-9))
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		if s%60 == 0 {
			return fmt.Sprintf("%dm", s/60)
		}
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case s < 86400:
		if m := s % 3600 / 60; m != 0 {
			return fmt.Sprintf("%dh%dm", s/3600, m)
		}
		return fmt.Sprintf("%dh", s/3600)
	default:
		if h := s % 86400 / 3600; h != 0 {
			return fmt.Sprintf("%dd%dh", s/86400, h)
		}
		return fmt.Sprintf("%dd", s/86400)
	}
}

// estRate formats a rate such as "1 segment/s", "0.5 calls/s" or
// "100 messages/s".
func estRate(rate float64, unit string) string {
	var n string
	if rate >= 10 {
		n = strconv.FormatFloat(math.Round(rate), 'f', -1, 64)
	} else {
		n = strconv.FormatFloat(estRound(rate, 2), 'f', -1, 64)
	}
	if n != "1" {
		unit += "s"
	}
	return n + " " + unit + "/s"
}

// estUnits formats a count of units, e.g. "1 message", "2,000 segments".
func estUnits(n int64, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return estGroup(n) + " " + unit + "s"
}

// estPlural formats n with the singular or plural noun.
func estPlural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return estGroup(int64(n)) + " " + many
}

// estGroup formats n with thousands separators: 12345 → "12,345".
func estGroup(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// estList joins names as "a", "a and b" or "a, b and c".
func estList(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// estRound rounds x to the given number of decimals, removing float noise
// such as 7.8999999999 from sums of prices.
func estRound(x float64, decimals int) float64 {
	p := math.Pow(10, float64(decimals))
	return math.Round(x*p) / p
}
