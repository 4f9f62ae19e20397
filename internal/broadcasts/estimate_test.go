package broadcasts

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

// estPeople returns n recipients with the given locale and channels.
func estPeople(n int, locale string, channels ...string) []EstimateRecipient {
	rs := make([]EstimateRecipient, n)
	for i := range rs {
		rs[i] = EstimateRecipient{Channels: channels, Locale: locale}
	}
	return rs
}

// estChannelOf returns the estimate of one channel.
func estChannelOf(t *testing.T, e Estimate, channel string) ChannelEstimate {
	t.Helper()
	for _, c := range e.Channels {
		if c.Channel == channel {
			return c
		}
	}
	t.Fatalf("no estimate for channel %q in %+v", channel, e.Channels)
	return ChannelEstimate{}
}

// estHasWarning reports whether a warning contains every part.
func estHasWarning(warnings []string, parts ...string) bool {
	for _, w := range warnings {
		ok := true
		for _, p := range parts {
			if !strings.Contains(w, p) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func estNear(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

// Fixtures: a 150-character English text (GSM-7) and a 100-character
// Chinese text (UCS-2), the same notice.
var (
	estEnglish150 = "Typhoon warning: the clinic is closed today. Please do not come in. " +
		"For urgent care call 120. Reply 1 if you have read this message. Thanks. Stay safe"
	estChinese100 = strings.Repeat("台风来袭，本诊所今天关闭，请勿前来就诊。", 5)
)

func TestEstimateSMSSegmentsEnglishVsChinese(t *testing.T) {
	english, chinese := estEnglish150, estChinese100
	if n, m := utf8.RuneCountInString(english), utf8.RuneCountInString(chinese); n != 150 || m != 100 {
		t.Fatalf("fixtures: %d English and %d Chinese characters, want 150 and 100", n, m)
	}

	var rs []EstimateRecipient
	rs = append(rs, estPeople(3, "en", "sms")...)
	rs = append(rs, estPeople(2, "zh-CN", "sms")...)
	e := EstimateBroadcast(EstimateInput{
		Cascade:    []string{"sms"},
		Recipients: rs,
		Texts:      map[string]map[string]string{"sms": {"en": english, "zh": chinese}},
		Senders:    map[string]SenderCapacity{"sms": {PerSecond: 1}},
		Prices:     Prices{Currency: "USD", SMSSegment: 0.01},
	})
	c := estChannelOf(t, e, "sms")
	want := []SMSLocale{
		{Locale: "en", Encoding: "GSM-7", Segments: 1, Recipients: 3},
		{Locale: "zh-CN", Encoding: "UCS-2", Segments: 2, Recipients: 2},
	}
	if len(c.SMS) != len(want) {
		t.Fatalf("SMS rows = %+v, want %+v", c.SMS, want)
	}
	for i := range want {
		if c.SMS[i] != want[i] {
			t.Errorf("SMS[%d] = %+v, want %+v", i, c.SMS[i], want[i])
		}
	}
	if !estNear(c.Units, 3*1+2*2) {
		t.Errorf("Units = %v, want 7 segments", c.Units)
	}
	if !estNear(c.Cost, 0.07) || !estNear(e.Cost, 0.07) {
		t.Errorf("Cost = %v (total %v), want 0.07", c.Cost, e.Cost)
	}
	if !estHasWarning(c.Warnings, `Chinese SMS text for "zh-CN"`, "2 segments per message", "UCS-2") {
		t.Errorf("no Chinese UCS-2 warning in %q", c.Warnings)
	}
	if estHasWarning(c.Warnings, `"en"`) {
		t.Errorf("GSM-7 English text should not be warned about: %q", c.Warnings)
	}

	// The same Chinese text is 2 segments where 100 plain characters are 1.
	zh := EstimateBroadcast(EstimateInput{Cascade: []string{"sms"}, Recipients: estPeople(1000, "zh", "sms"),
		Texts: map[string]map[string]string{"sms": {"zh": estChinese100}}})
	en := EstimateBroadcast(EstimateInput{Cascade: []string{"sms"}, Recipients: estPeople(1000, "en", "sms"),
		Texts: map[string]map[string]string{"sms": {"en": strings.Repeat("x", 100)}}})
	if zh.Channels[0].Units != 2000 || en.Channels[0].Units != 1000 {
		t.Errorf("Units: Chinese %v, English %v; want 2000 and 1000", zh.Channels[0].Units, en.Channels[0].Units)
	}
}

func TestEstimateUCS2StrayCharacter(t *testing.T) {
	body := strings.Repeat("b", 100) + "’s clinic" // a curly apostrophe
	e := EstimateBroadcast(EstimateInput{
		Cascade:    []string{"sms"},
		Recipients: estPeople(10, "en", "sms"),
		Texts:      map[string]map[string]string{"sms": {"en": body}},
		Senders:    map[string]SenderCapacity{"sms": {PerSecond: 10}},
	})
	c := e.Channels[0]
	if c.SMS[0].Encoding != "UCS-2" || c.SMS[0].Segments != 2 {
		t.Fatalf("SMS = %+v, want UCS-2 in 2 segments", c.SMS)
	}
	if !estHasWarning(c.Warnings, `SMS text for "en"`, "U+2019", "2 segments", "replacing it would take 1 segment") {
		t.Errorf("no stray-character warning in %q", c.Warnings)
	}
}

// Mixed recipients over wechat → sms → voice.
func estMixed() []EstimateRecipient {
	var rs []EstimateRecipient
	rs = append(rs, estPeople(4, "zh", "wechat", "sms", "voice")...) // first: wechat
	rs = append(rs, estPeople(3, "en", "voice", "sms")...)           // first: sms (cascade order wins)
	rs = append(rs, estPeople(2, "en", "voice")...)                  // first: voice
	rs = append(rs, estPeople(1, "en", "SMS")...)                    // first: sms (case-insensitive)
	rs = append(rs, estPeople(5, "en", "email")...)                  // unreachable
	rs = append(rs, EstimateRecipient{Locale: "en"})                 // unreachable, no channel at all
	return rs
}

func TestEstimateCascadeFirstChannel(t *testing.T) {
	e := EstimateBroadcast(EstimateInput{
		Cascade:    []string{"wechat", "sms", "voice", "sms"}, // a repeat counts once
		Recipients: estMixed(),
		Texts:      map[string]map[string]string{"sms": {"": "Clinic closed today."}, "voice": {"": "Clinic closed today."}},
		Senders:    map[string]SenderCapacity{"wechat": {PerSecond: 10}, "sms": {PerSecond: 1}, "voice": {PerSecond: 1}},
	})
	if e.Recipients != 16 || e.Unreachable != 6 {
		t.Errorf("Recipients %d, Unreachable %d; want 16 and 6", e.Recipients, e.Unreachable)
	}
	if len(e.Channels) != 3 {
		t.Fatalf("channels = %d, want 3", len(e.Channels))
	}
	for _, w := range []struct {
		channel          string
		first, reachable int
	}{{"wechat", 4, 4}, {"sms", 4, 8}, {"voice", 2, 9}} {
		c := estChannelOf(t, e, w.channel)
		if c.First != w.first || c.Reachable != w.reachable {
			t.Errorf("%s: First %d, Reachable %d; want %d and %d", w.channel, c.First, c.Reachable, w.first, w.reachable)
		}
		// AckRate 0: everyone is tried on every channel they have.
		if !estNear(c.Expected, float64(w.reachable)) || !estNear(c.Units, float64(w.reachable)) {
			t.Errorf("%s: Expected %v, Units %v; want %d", w.channel, c.Expected, c.Units, w.reachable)
		}
	}
	// First wave: 4 WeChat at 10/s, 4 SMS at 1/s, 2 calls at 1/s.
	if e.FirstWave != "4s" {
		t.Errorf("FirstWave = %q, want 4s", e.FirstWave)
	}
}

func TestEstimateAckRate(t *testing.T) {
	in := EstimateInput{
		Cascade:    []string{"wechat", "sms", "voice"},
		Recipients: estMixed(),
		Texts:      map[string]map[string]string{"sms": {"": "Clinic closed today."}},
		AckRate:    0.5,
	}
	e := EstimateBroadcast(in)
	// wechat: 4×1. sms: 4×0.5 (second channel of the WeChat group) + 3 + 1.
	// voice: 4×0.25 (third) + 3×0.5 (second) + 2 (first).
	for _, w := range []struct {
		channel  string
		expected float64
	}{{"wechat", 4}, {"sms", 6}, {"voice", 4.5}} {
		if c := estChannelOf(t, e, w.channel); !estNear(c.Expected, w.expected) {
			t.Errorf("%s: Expected %v, want %v", w.channel, c.Expected, w.expected)
		}
	}

	// Everyone acknowledges: only first channels are sent.
	in.AckRate = 1
	e = EstimateBroadcast(in)
	for _, c := range e.Channels {
		if !estNear(c.Expected, float64(c.First)) {
			t.Errorf("AckRate 1, %s: Expected %v, want First %d", c.Channel, c.Expected, c.First)
		}
	}

	// Out-of-range rates are clamped.
	in.AckRate = -3
	if c := estChannelOf(t, EstimateBroadcast(in), "voice"); !estNear(c.Expected, 9) {
		t.Errorf("AckRate -3: voice Expected %v, want 9 (as 0)", c.Expected)
	}
	in.AckRate = math.NaN()
	if c := estChannelOf(t, EstimateBroadcast(in), "voice"); !estNear(c.Expected, 9) {
		t.Errorf("AckRate NaN: voice Expected %v, want 9 (as 0)", c.Expected)
	}
}

func TestEstimateETAByRate(t *testing.T) {
	in := EstimateInput{
		Cascade:    []string{"sms"},
		Recipients: estPeople(10000, "en", "sms"),
		Texts:      map[string]map[string]string{"sms": {"en": "The clinic is closed today because of the typhoon."}},
		Senders:    map[string]SenderCapacity{"sms": {PerSecond: 1}},
	}
	slow := EstimateBroadcast(in).Channels[0]
	if slow.Seconds != 10000 || slow.Duration != "2h46m" {
		t.Errorf("at 1/s: %v s, %q; want 10000 s, 2h46m", slow.Seconds, slow.Duration)
	}
	if !estHasWarning(slow.Warnings, "at 1 segment/s this takes 2h46m", "add senders", "WeChat first") {
		t.Errorf("no slow-channel warning in %q", slow.Warnings)
	}

	in.Senders["sms"] = SenderCapacity{PerSecond: 100}
	e := EstimateBroadcast(in)
	fast := e.Channels[0]
	if fast.Seconds != 100 || fast.Duration != "1m40s" || e.FirstWave != "1m40s" {
		t.Errorf("at 100/s: %v s, %q, first wave %q; want 100 s, 1m40s", fast.Seconds, fast.Duration, e.FirstWave)
	}
	if len(fast.Warnings) != 0 {
		t.Errorf("at 100/s: unexpected warnings %q", fast.Warnings)
	}

	// Chinese text takes twice the segments, so twice the time.
	in.Recipients = estPeople(10000, "zh", "sms")
	in.Texts["sms"]["zh"] = estChinese100
	if c := EstimateBroadcast(in).Channels[0]; c.Duration != "3m20s" {
		t.Errorf("Chinese at 100/s: %q, want 3m20s", c.Duration)
	}

	// No rate: unknown, with a warning.
	in.Senders = nil
	e = EstimateBroadcast(in)
	if c := e.Channels[0]; c.Duration != "unknown" || c.Seconds != 0 || !estHasWarning(c.Warnings, "no sender rate") {
		t.Errorf("no sender: %q, %v s, %q", c.Duration, c.Seconds, c.Warnings)
	}
	if e.FirstWave != "unknown" {
		t.Errorf("no sender: FirstWave %q, want unknown", e.FirstWave)
	}
}

func TestEstimateChannelsInParallel(t *testing.T) {
	// WeChat first for 600 at 10/s (1m), SMS first for 100 at 1/s (1m40s);
	// the WeChat group is then also texted: SMS has 700 sends (11m40s).
	var rs []EstimateRecipient
	rs = append(rs, estPeople(600, "en", "wechat", "sms")...)
	rs = append(rs, estPeople(100, "en", "sms")...)
	e := EstimateBroadcast(EstimateInput{
		Cascade:    []string{"wechat", "sms"},
		Recipients: rs,
		Texts:      map[string]map[string]string{"sms": {"en": "Closed today."}},
		Senders:    map[string]SenderCapacity{"wechat": {PerSecond: 10}, "sms": {PerSecond: 1}},
	})
	if c := estChannelOf(t, e, "wechat"); c.Duration != "1m" {
		t.Errorf("wechat Duration %q, want 1m", c.Duration)
	}
	c := estChannelOf(t, e, "sms")
	if c.Duration != "11m40s" {
		t.Errorf("sms Duration %q, want 11m40s", c.Duration)
	}
	// WeChat is already first: the advice is only to add senders.
	if !estHasWarning(c.Warnings, "this takes 11m40s", "add senders") || estHasWarning(c.Warnings, "WeChat first") {
		t.Errorf("sms warnings %q", c.Warnings)
	}
	if e.FirstWave != "1m40s" {
		t.Errorf("FirstWave %q, want 1m40s", e.FirstWave)
	}
}

func TestEstimateWeChatDailyQuota(t *testing.T) {
	in := EstimateInput{
		Cascade:    []string{"wechat"},
		Recipients: estPeople(5000, "zh", "wechat"),
		Senders:    map[string]SenderCapacity{"wechat": {PerSecond: 50, PerDay: 10000, UsedToday: 8000}},
		Prices:     Prices{Currency: "CNY", WeChatMessage: 0.1},
	}
	c := EstimateBroadcast(in).Channels[0]
	if c.QuotaLeft == nil || *c.QuotaLeft != 2000 {
		t.Fatalf("QuotaLeft = %v, want 2000", c.QuotaLeft)
	}
	if !c.OverQuota {
		t.Error("OverQuota = false, want true")
	}
	if !estHasWarning(c.Warnings, "daily quota", "5,000 messages expected, 2,000 left today (quota 10,000 a day)", "3,000 wait", "midnight") {
		t.Errorf("no quota warning in %q", c.Warnings)
	}
	if c.Duration != "1m40s" {
		t.Errorf("Duration %q, want 1m40s (the rate alone)", c.Duration)
	}

	// Used beyond the quota: nothing left, and several days to go.
	in.Senders["wechat"] = SenderCapacity{PerSecond: 50, PerDay: 1000, UsedToday: 1200}
	c = EstimateBroadcast(in).Channels[0]
	if c.QuotaLeft == nil || *c.QuotaLeft != 0 || !c.OverQuota || !estHasWarning(c.Warnings, "5 more days at 1,000 a day") {
		t.Errorf("exhausted quota: left %v, over %v, warnings %q", c.QuotaLeft, c.OverQuota, c.Warnings)
	}

	// Within the quota.
	in.Senders["wechat"] = SenderCapacity{PerSecond: 50, PerDay: 100000}
	c = EstimateBroadcast(in).Channels[0]
	if c.QuotaLeft == nil || *c.QuotaLeft != 100000 || c.OverQuota || len(c.Warnings) != 0 {
		t.Errorf("within quota: left %v, over %v, warnings %q", c.QuotaLeft, c.OverQuota, c.Warnings)
	}

	// No quota.
	in.Senders["wechat"] = SenderCapacity{PerSecond: 50}
	if c = EstimateBroadcast(in).Channels[0]; c.QuotaLeft != nil || c.OverQuota {
		t.Errorf("no quota: left %v, over %v", c.QuotaLeft, c.OverQuota)
	}
}

func TestEstimateCallMinutes(t *testing.T) {
	words := func(n int) string { return strings.TrimSpace(strings.Repeat("word ", n)) }
	for _, tc := range []struct {
		name string
		text string
		want float64
	}{
		{"a short message is billed 1 minute", "The clinic is closed today.", 1},
		{"150 words are 1 minute", words(150), 1},
		{"151 words round up to 2", words(151), 2},
		{"400 words are 3 minutes", words(400), 3},
		{"250 Chinese characters are 1 minute", strings.Repeat("诊", 250), 1},
		{"600 Chinese characters are 3 minutes", strings.Repeat("诊", 600), 3},
		{"Chinese punctuation is not a word", strings.Repeat("诊。", 250), 1},
		{"mixed: 200 characters and 100 words", strings.Repeat("诊", 200) + " " + words(100), 2},
		{"empty text is still 1 minute", "", 1},
	} {
		if got := estCallMinutes(tc.text); got != tc.want {
			t.Errorf("%s: %v minutes, want %v", tc.name, got, tc.want)
		}
	}

	var rs []EstimateRecipient
	rs = append(rs, estPeople(10, "en", "voice")...)
	rs = append(rs, estPeople(5, "zh", "voice")...)
	in := EstimateInput{
		Cascade:    []string{"voice"},
		Recipients: rs,
		Texts:      map[string]map[string]string{"voice": {"en": words(400), "zh": strings.Repeat("诊", 200)}},
		Senders:    map[string]SenderCapacity{"voice": {PerSecond: 1}},
		Prices:     Prices{Currency: "USD", VoiceMinute: 0.02},
	}
	c := EstimateBroadcast(in).Channels[0]
	// 10 calls × 3 min + 5 calls × 1 min = 35 minutes.
	if c.Units != 15 || !estNear(c.Cost, 35*0.02) {
		t.Errorf("Units %v, Cost %v; want 15 calls, %v", c.Units, c.Cost, 35*0.02)
	}
	if !estHasWarning(c.Warnings, `voice text for "en"`, "3 minutes") {
		t.Errorf("no long-call warning in %q", c.Warnings)
	}

	// Configured call minutes override the estimate.
	in.CallMinutes = 1.5
	if c = EstimateBroadcast(in).Channels[0]; !estNear(c.Cost, 15*1.5*0.02) || len(c.Warnings) != 0 {
		t.Errorf("CallMinutes 1.5: Cost %v, warnings %q; want %v", c.Cost, c.Warnings, 15*1.5*0.02)
	}
}

func TestEstimateCostTotals(t *testing.T) {
	var rs []EstimateRecipient
	rs = append(rs, estPeople(100, "zh", "wechat", "sms", "voice", "email")...)
	rs = append(rs, estPeople(50, "en", "sms", "email")...)
	in := EstimateInput{
		Cascade:    []string{"wechat", "sms", "voice", "email"},
		Recipients: rs,
		Texts: map[string]map[string]string{
			"sms":   {"zh": estChinese100, "en": "Clinic closed today."},
			"voice": {"": "Clinic closed today."},
		},
		Prices: Prices{Currency: "USD", SMSSegment: 0.0079, VoiceMinute: 0.014, WeChatMessage: 0.001, EmailMessage: 0.0001},
	}
	e := EstimateBroadcast(in)
	want := map[string]float64{
		"wechat": 100 * 0.001,
		"sms":    (100*2 + 50*1) * 0.0079,
		"voice":  100 * 1 * 0.014,
		"email":  150 * 0.0001,
	}
	var sum float64
	for ch, w := range want {
		if c := estChannelOf(t, e, ch); !estNear(c.Cost, w) {
			t.Errorf("%s: Cost %v, want %v", ch, c.Cost, w)
		}
		sum += w
	}
	if !estNear(e.Cost, sum) || e.Currency != "USD" {
		t.Errorf("total %v %s, want %v USD", e.Cost, e.Currency, sum)
	}

	// Half acknowledge on each channel: the SMS of the WeChat group halves.
	in.AckRate = 0.5
	e = EstimateBroadcast(in)
	if c := estChannelOf(t, e, "sms"); !estNear(c.Cost, (100*0.5*2+50)*0.0079) {
		t.Errorf("AckRate 0.5: sms Cost %v, want %v", c.Cost, (100*0.5*2+50)*0.0079)
	}

	// A missing price is pointed out.
	in.Prices.VoiceMinute = 0
	if c := estChannelOf(t, EstimateBroadcast(in), "voice"); c.Cost != 0 || !estHasWarning(c.Warnings, "no price", "voice minutes") {
		t.Errorf("no voice price: Cost %v, warnings %q", c.Cost, c.Warnings)
	}

	// No prices at all: one warning for the whole broadcast.
	in.Prices = Prices{}
	e = EstimateBroadcast(in)
	if e.Cost != 0 || !estHasWarning(e.Warnings, "no prices are configured") {
		t.Errorf("no prices: Cost %v, warnings %q", e.Cost, e.Warnings)
	}
	for _, c := range e.Channels {
		if estHasWarning(c.Warnings, "no price") {
			t.Errorf("no prices: %s warns %q", c.Channel, c.Warnings)
		}
	}
}

func TestEstimateUnreachable(t *testing.T) {
	var rs []EstimateRecipient
	rs = append(rs, estPeople(7, "en", "sms")...)
	rs = append(rs, estPeople(2, "en", "email")...)
	rs = append(rs, estPeople(1, "en")...)
	e := EstimateBroadcast(EstimateInput{
		Cascade:    []string{"wechat", "sms"},
		Recipients: rs,
		Texts:      map[string]map[string]string{"sms": {"en": "Closed."}},
	})
	if e.Recipients != 10 || e.Unreachable != 3 {
		t.Errorf("Recipients %d, Unreachable %d; want 10 and 3", e.Recipients, e.Unreachable)
	}
	if !estHasWarning(e.Warnings, "3 recipients have none of the cascade's channels (wechat, sms)", "2 email") {
		t.Errorf("no unreachable warning in %q", e.Warnings)
	}
	if c := estChannelOf(t, e, "wechat"); c.Reachable != 0 || c.Units != 0 || c.Duration != "0s" || len(c.Warnings) != 0 {
		t.Errorf("unused wechat: %+v", c)
	}

	// Nobody, and no cascade.
	e = EstimateBroadcast(EstimateInput{})
	if e.Recipients != 0 || e.Unreachable != 0 || len(e.Channels) != 0 || e.FirstWave != "0s" || e.Cost != 0 {
		t.Errorf("empty input: %+v", e)
	}
	if !estHasWarning(e.Warnings, "no channel") {
		t.Errorf("empty cascade: warnings %q", e.Warnings)
	}
}

func TestEstimateTextLocaleFallback(t *testing.T) {
	texts := map[string]string{"": "Closed.", "zh": estChinese100, "zh-TW": "診所休診", "fr": "Fermé."}
	for _, tc := range []struct{ locale, want string }{
		{"zh-TW", "診所休診"},
		{"zh_tw", "診所休診"},
		{"zh-CN", estChinese100},
		{"zh-Hans-CN", estChinese100},
		{"de", "Closed."},
		{"", "Closed."},
	} {
		if got, ok := estLookup(texts, tc.locale); !ok || got != tc.want {
			t.Errorf("locale %q: %q, want %q", tc.locale, got, tc.want)
		}
	}
	// Without "", the first locale in sorted order.
	if got, _ := estLookup(map[string]string{"fr": "Fermé.", "en": "Closed.", "de": ""}, "ja"); got != "Closed." {
		t.Errorf("any: %q, want the en text", got)
	}
	if _, ok := estLookup(nil, "en"); ok {
		t.Error("no texts: found one")
	}

	// No SMS text at all: 1 segment per message, with a warning.
	c := EstimateBroadcast(EstimateInput{Cascade: []string{"sms"}, Recipients: estPeople(4, "en", "sms")}).Channels[0]
	if c.Units != 4 || !estHasWarning(c.Warnings, "no SMS text", `"en"`) {
		t.Errorf("no text: Units %v, warnings %q", c.Units, c.Warnings)
	}
}

func TestEstimateJSON(t *testing.T) {
	e := EstimateBroadcast(EstimateInput{
		Cascade:    []string{"wechat", "sms"},
		Recipients: append(estPeople(2, "zh", "wechat"), estPeople(1, "en", "sms")...),
		Texts:      map[string]map[string]string{"sms": {"en": "Closed."}},
		Senders:    map[string]SenderCapacity{"wechat": {PerSecond: 1, PerDay: 100}, "sms": {PerSecond: 1}},
		Prices:     Prices{Currency: "CNY", SMSSegment: 0.05, WeChatMessage: 0.01},
	})
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, part := range []string{
		`"recipients":3`, `"unreachable":0`, `"first_wave":"2s"`, `"currency":"CNY"`, `"cost":0.07`,
		`"channel":"wechat","first":2,"reachable":2,"expected":2,"units":2,"duration":"2s","seconds":2,"quota_left":100,"over_quota":false,"cost":0.02`,
		`"sms":[{"locale":"en","encoding":"GSM-7","segments":1,"recipients":1}]`,
	} {
		if !strings.Contains(got, part) {
			t.Errorf("JSON lacks %s:\n%s", part, got)
		}
	}
	if strings.Count(got, "quota_left") != 1 || strings.Contains(got, `"warnings"`) {
		t.Errorf("JSON should omit quota_left without a quota and empty warnings:\n%s", got)
	}
}

func TestDurationFormat(t *testing.T) {
	for _, tc := range []struct {
		seconds float64
		want    string
	}{
		{0, "0s"},
		{-5, "0s"},
		{0.2, "1s"},
		{45, "45s"},
		{59.5, "1m"},
		{60, "1m"},
		{100, "1m40s"},
		{500, "8m20s"},
		{3599, "59m59s"},
		{3600, "1h"},
		{7200, "2h"},
		{10000, "2h46m"},
		{86399, "23h59m"},
		{86400, "1d"},
		{90000, "1d1h"},
		{3 * 86400, "3d"},
		{math.NaN(), "unknown"},
		{math.Inf(1), "unknown"},
	} {
		if got := estDuration(tc.seconds); got != tc.want {
			t.Errorf("estDuration(%v) = %q, want %q", tc.seconds, got, tc.want)
		}
	}
}
