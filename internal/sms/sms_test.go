package sms

import (
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"
)

// rep is shorthand for strings.Repeat.
func rep(s string, n int) string { return strings.Repeat(s, n) }

func TestAnalyze(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Info
	}{
		// Empty and short GSM-7 bodies.
		{"an empty body has no segments", "", Info{GSM7, 0, 0, 0}},
		{"a short ASCII greeting is one GSM-7 segment", "Hello", Info{GSM7, 1, 5, 5}},
		{"accented letters in the basic table stay GSM-7", "Café à 9h", Info{GSM7, 1, 9, 9}},

		// GSM-7 single/multi-part limits: 160 alone, 153 per part.
		{"160 plain characters fit one segment", rep("a", 160), Info{GSM7, 1, 160, 160}},
		{"161 characters need two segments of 153", rep("a", 161), Info{GSM7, 2, 161, 161}}, // 153 + 8
		{"306 characters fill exactly two segments", rep("a", 306), Info{GSM7, 2, 306, 306}},
		{"307 characters need a third segment", rep("a", 307), Info{GSM7, 3, 307, 307}},           // 153 + 153 + 1
		{"1600 GSM-7 characters are eleven segments", rep("a", 1600), Info{GSM7, 11, 1600, 1600}}, // 10*153 = 1530 < 1600 <= 11*153 = 1683

		// The basic table, every non-ASCII entry and every ASCII entry.
		{
			"every non-ASCII basic table character is one septet",
			"£¥èéùìòÇØøÅåΔΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà",
			Info{GSM7, 1, 39, 39},
		},
		{
			"every ASCII basic table character is one septet",
			"\n\r !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz",
			Info{GSM7, 1, 88, 88},
		},

		// Extension table: two septets each.
		{"every extension character is two septets", "^{}\\[~]|€\f", Info{GSM7, 1, 20, 10}},
		{"a euro sign alone is two septets", "€", Info{GSM7, 1, 2, 1}},
		{"158 letters and a euro sign fill one segment", rep("a", 158) + "€", Info{GSM7, 1, 160, 159}},
		// 159 + 2 = 161 septets > 160, so multi-part: 153 + 8.
		{"a euro sign makes 160 characters two segments", rep("a", 159) + "€", Info{GSM7, 2, 161, 160}},
		// 160 + 2 = 162 septets: 153 + 9.
		{"one euro sign makes 160 letters two segments", rep("a", 160) + "€", Info{GSM7, 2, 162, 161}},
		{"80 euro signs fill one segment", rep("€", 80), Info{GSM7, 1, 160, 80}},
		// 162 septets; 76 euros (152 septets) per part, as a 77th would
		// straddle septet 153: 76 + 5 euros.
		{"81 euro signs need two segments", rep("€", 81), Info{GSM7, 2, 162, 81}},
		// 306 septets would fit 2*153, but only 76 euros fit a part:
		// 76 + 76 + 1.
		{"153 euro signs need three segments of 76", rep("€", 153), Info{GSM7, 3, 306, 153}},

		// Escape pairs at the 153 boundary.
		// Septets 1-152 are letters; the euro would take septets 153-154,
		// so it moves: part 1 = 152, part 2 = € + 151 letters = 153,
		// part 3 = 1 letter. A naive ceil(306/153) would say 2.
		{"an escape pair is not split at a segment boundary", rep("a", 152) + "€" + rep("a", 152), Info{GSM7, 3, 306, 305}},
		// Septets 1-151 letters, euro at 152-153 ends part 1 exactly;
		// part 2 = 153 letters.
		{"an escape pair ending exactly at the boundary stays put", rep("a", 151) + "€" + rep("a", 153), Info{GSM7, 2, 306, 305}},
		{"an escape pair moved over the boundary can still fit", rep("a", 152) + "€" + rep("a", 10), Info{GSM7, 2, 164, 163}}, // 152 + 12

		// Characters outside GSM-7 switch the whole body to UCS-2.
		{"a curly quote forces UCS-2", "It’s 9am", Info{UCS2, 1, 8, 8}},
		{"curly double quotes force UCS-2", "“Hi”", Info{UCS2, 1, 4, 4}},
		{"a backtick forces UCS-2", "Don`t", Info{UCS2, 1, 5, 5}},
		{"a tab forces UCS-2", "a\tb", Info{UCS2, 1, 3, 3}},
		{"a NUL is not the GSM @ and forces UCS-2", "\x00", Info{UCS2, 1, 1, 1}},
		{"lowercase c-cedilla is not in the basic table", "ç", Info{UCS2, 1, 1, 1}},
		{"a circumflex vowel forces UCS-2", "Crème brûlée", Info{UCS2, 1, 12, 12}},
		{"Greek lowercase forces UCS-2", "α", Info{UCS2, 1, 1, 1}},
		{"a no-break space forces UCS-2", "a\u00a0b", Info{UCS2, 1, 3, 3}},
		// In UCS-2 the euro is one unit, not two.
		{"extension characters are one unit in UCS-2", "€’", Info{UCS2, 1, 2, 2}},
		// 160 GSM letters would be one segment, but one curly quote makes
		// 161 UCS-2 units: ceil(161/67) = 3 (67 + 67 + 27).
		{"one curly quote turns 160 letters into three segments", rep("a", 160) + "’", Info{UCS2, 3, 161, 161}},

		// UCS-2 single/multi-part limits: 70 alone, 67 per part.
		{"Chinese text is UCS-2, 70 per segment", rep("中", 70), Info{UCS2, 1, 70, 70}},
		{"71 Chinese characters need two segments of 67", rep("中", 71), Info{UCS2, 2, 71, 71}}, // 67 + 4
		{"134 Chinese characters fill exactly two segments", rep("中", 134), Info{UCS2, 2, 134, 134}},
		{"135 Chinese characters need a third segment", rep("中", 135), Info{UCS2, 3, 135, 135}},
		// 23*67 = 1541 < 1600 <= 24*67 = 1608.
		{"1600 Chinese characters are 24 segments", rep("中", 1600), Info{UCS2, 24, 1600, 1600}},

		// Surrogate pairs.
		{"an emoji is two UTF-16 units", "😀", Info{UCS2, 1, 2, 1}},
		{"35 emoji fill one segment", rep("😀", 35), Info{UCS2, 1, 70, 35}},
		// 72 units; 33 emoji (66 units) per part: 33 + 3.
		{"36 emoji need two segments of 33", rep("😀", 36), Info{UCS2, 2, 72, 36}},
		{"68 letters and an emoji fill one segment", rep("a", 68) + "😀", Info{UCS2, 1, 70, 69}},
		// 71 units: 67 letters + (2 letters + emoji = 4 units).
		{"70 characters including an emoji need two segments", rep("a", 69) + "😀", Info{UCS2, 2, 71, 70}},
		// Units 1-66 are Chinese; the emoji would take units 67-68, so it
		// moves: part 1 = 66, part 2 = emoji + 65 = 67, part 3 = 1.
		// A naive ceil(134/67) would say 2.
		{"a surrogate pair is not split at the 67 boundary", rep("中", 66) + "😀" + rep("中", 66), Info{UCS2, 3, 134, 133}},
		// Emoji at units 66-67 ends part 1 exactly; part 2 = 67.
		{"a surrogate pair ending exactly at the boundary stays put", rep("中", 65) + "😀" + rep("中", 67), Info{UCS2, 2, 134, 133}},
		{"a clinic reminder with an emoji is UCS-2", "Reminder: your appointment is tomorrow at 10:30 📅", Info{UCS2, 1, 50, 49}},

		// Invalid UTF-8: each bad byte is one U+FFFD, which is UCS-2.
		{"an invalid byte counts as one replacement character", "\xff", Info{UCS2, 1, 1, 1}},
		{"an invalid byte makes ASCII text UCS-2", "a\xffb", Info{UCS2, 1, 3, 3}},
		{"a truncated euro sign is two replacement characters", "\xe2\x82", Info{UCS2, 1, 2, 2}},
		{"an encoded surrogate half is three replacement characters", "\xed\xa0\x80", Info{UCS2, 1, 3, 3}},
		{"a literal replacement character is UCS-2", "\uFFFD", Info{UCS2, 1, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Analyze(tt.body)
			if got != tt.want {
				t.Errorf("Analyze(%.40q) = %+v, want %+v", tt.body, got, tt.want)
			}
			if ref := reference(tt.body); ref != tt.want {
				t.Errorf("reference(%.40q) = %+v, want %+v (test expectation or reference is wrong)", tt.body, ref, tt.want)
			}
		})
	}
}

// gsmBasic is the GSM 03.38 default alphabet in code order, 0x00 to 0x7F,
// with 0x1B (escape to the extension table) as -1.
var gsmBasic = [128]rune{
	'@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å',
	'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', -1, 'Æ', 'æ', 'ß', 'É',
	' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/',
	'0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?',
	'¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O',
	'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§',
	'¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o',
	'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à',
}

// gsmExt maps the GSM 03.38 extension table characters to their codes
// (sent after 0x1B).
var gsmExt = map[rune]byte{
	'\f': 0x0A, '^': 0x14, '{': 0x28, '}': 0x29, '\\': 0x2F,
	'[': 0x3C, '~': 0x3D, ']': 0x3E, '|': 0x40, '€': 0x65,
}

// encodeGSM returns body as a sequence of GSM-7 septets, or false if some
// character is not GSM-7.
func encodeGSM(body string) ([]byte, bool) {
	var out []byte
	for _, r := range body {
		if c, ok := gsmExt[r]; ok {
			out = append(out, 0x1B, c)
			continue
		}
		found := false
		for code, b := range gsmBasic {
			if b == r {
				out = append(out, byte(code))
				found = true
				break
			}
		}
		if !found {
			return nil, false
		}
	}
	return out, true
}

// countParts splits an encoded sequence into parts of at most limit units,
// never ending a part just before the second unit of a pair (as decided by
// isLead for the unit that starts the pair).
func countParts(seq []int, limit int, isLead func(int) bool) int {
	parts, fill := 1, 0
	for i := 0; i < len(seq); i++ {
		need := 1
		if isLead(seq[i]) {
			need = 2
		}
		if fill+need > limit {
			parts++
			fill = 0
		}
		fill += need
		i += need - 1
	}
	return parts
}

// reference is a deliberately slow implementation of Analyze that encodes
// the body for real (septets with ESC codes, or UTF-16) and splits the
// encoded sequence.
func reference(body string) Info {
	chars := utf8.RuneCountInString(body)
	if body == "" {
		return Info{Encoding: GSM7}
	}
	if septets, ok := encodeGSM(body); ok {
		seq := make([]int, len(septets))
		for i, s := range septets {
			seq[i] = int(s)
		}
		info := Info{Encoding: GSM7, Units: len(seq), Chars: chars, Segments: 1}
		if len(seq) > 160 {
			info.Segments = countParts(seq, 153, func(u int) bool { return u == 0x1B })
		}
		return info
	}
	u16 := utf16.Encode([]rune(body)) // invalid bytes become U+FFFD
	seq := make([]int, len(u16))
	for i, u := range u16 {
		seq[i] = int(u)
	}
	info := Info{Encoding: UCS2, Units: len(seq), Chars: chars, Segments: 1}
	if len(seq) > 70 {
		info.Segments = countParts(seq, 67, func(u int) bool { return 0xD800 <= u && u < 0xDC00 })
	}
	return info
}

// TestGSMAlphabetMembership checks every Unicode code point on its own: only
// the 127 basic table characters and 10 extension table characters are
// GSM-7, costing 1 and 2 septets.
func TestGSMAlphabetMembership(t *testing.T) {
	basic, ext := 0, 0
	for r := rune(0); r <= utf8.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		got := Analyze(string(r))
		want := reference(string(r))
		if got != want {
			t.Fatalf("Analyze(%U %q) = %+v, want %+v", r, r, got, want)
		}
		if got.Encoding == GSM7 {
			switch got.Units {
			case 1:
				basic++
			case 2:
				ext++
			}
		}
	}
	if basic != 127 || ext != 10 {
		t.Errorf("found %d basic and %d extension GSM-7 characters, want 127 and 10", basic, ext)
	}
}

// TestAnalyzeDoesNotAllocate guards the per-request cost.
func TestAnalyzeDoesNotAllocate(t *testing.T) {
	for _, body := range benchBodies {
		if n := testing.AllocsPerRun(100, func() { Analyze(body.body) }); n != 0 {
			t.Errorf("Analyze(%s) allocates %v times per call, want 0", body.name, n)
		}
	}
}

func TestMaxCharsIsTwilioLimit(t *testing.T) {
	if MaxChars != 1600 {
		t.Fatalf("MaxChars = %d, want 1600", MaxChars)
	}
	// The limit is in code points: 1600 emoji are at the limit even though
	// they are 3200 UTF-16 units and 6400 bytes.
	if info := Analyze(rep("😀", MaxChars)); info.Chars != MaxChars {
		t.Errorf("1600 emoji: Chars = %d, want %d", info.Chars, MaxChars)
	}
}

func FuzzAnalyze(f *testing.F) {
	for _, seed := range []string{
		"",
		"Hello",
		"Your appointment is tomorrow at 10:30. Reply C to confirm.",
		rep("a", 160),
		rep("a", 161),
		rep("a", 152) + "€" + rep("a", 152),
		rep("€", 81),
		"^{}\\[~]|€\f",
		"It’s 9am",
		"Don`t",
		rep("中", 71),
		rep("中", 66) + "😀" + rep("中", 66),
		rep("😀", 36),
		"\xff",
		"a\xe2\x82",
		"\xed\xa0\x80",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		info := Analyze(body)

		if (info.Segments == 0) != (body == "") {
			t.Fatalf("Analyze(%q).Segments = %d", body, info.Segments)
		}
		if n := utf8.RuneCountInString(body); info.Chars != n {
			t.Fatalf("Analyze(%q).Chars = %d, want %d", body, info.Chars, n)
		}
		if info.Units < info.Chars || info.Units > 2*info.Chars {
			t.Fatalf("Analyze(%q).Units = %d outside [Chars, 2*Chars] = [%d, %d]", body, info.Units, info.Chars, 2*info.Chars)
		}

		var single, multi int
		switch info.Encoding {
		case GSM7:
			single, multi = 160, 153
			if !utf8.ValidString(body) {
				t.Fatalf("Analyze(%q): invalid UTF-8 reported as GSM-7", body)
			}
		case UCS2:
			single, multi = 70, 67
			if n := len(utf16.Encode([]rune(body))); info.Units != n {
				t.Fatalf("Analyze(%q).Units = %d, want %d UTF-16 units", body, info.Units, n)
			}
		default:
			t.Fatalf("Analyze(%q).Encoding = %q", body, info.Encoding)
		}
		switch {
		case info.Segments == 1:
			if info.Units > single {
				t.Fatalf("Analyze(%q) = %+v: more than %d units in one segment", body, info, single)
			}
		case info.Segments > 1:
			if info.Units <= single {
				t.Fatalf("Analyze(%q) = %+v: would fit one segment", body, info)
			}
			// Greedy packing fills every part but the last to at least
			// multi-1 (one unit lost to a pair moved forward).
			if info.Units > info.Segments*multi || info.Units < (info.Segments-1)*(multi-1)+1 {
				t.Fatalf("Analyze(%q) = %+v: units out of range for %d segments of %d", body, info, info.Segments, multi)
			}
		}

		if ref := reference(body); info != ref {
			t.Fatalf("Analyze(%q) = %+v, reference says %+v", body, info, ref)
		}
	})
}

var benchBodies = []struct{ name, body string }{
	{"short GSM-7", "Reminder: your appointment with Dr. Smith is tomorrow at 10:30. Reply C to confirm or R to reschedule."},
	{"long GSM-7", rep("Please bring your insurance card {and} photo ID. ", 30)},
	{"UCS-2 emoji", "Reminder: your appointment is tomorrow at 10:30 📅 Reply C to confirm ✅"},
	{"long Chinese", rep("您的预约时间是明天上午十点。", 100)},
}

func BenchmarkAnalyze(b *testing.B) {
	for _, bb := range benchBodies {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.body)))
			for b.Loop() {
				Analyze(bb.body)
			}
		})
	}
}
