// Package sms works out how an SMS body will be encoded on the wire and how
// many segments (billable message parts) it will be split into.
//
// The rules follow GSM 03.38 and the way Twilio counts segments:
//
//   - If every character of the body is in the GSM 03.38 default alphabet
//     (basic table) or its extension table, the body is sent as GSM-7.
//     Basic-table characters cost one septet; extension-table characters
//     (^ { } \ [ ~ ] | € and form feed) cost two, because they are sent as an
//     escape (ESC) followed by the character.
//   - Otherwise the whole body is sent as UCS-2 (in practice UTF-16), one
//     16-bit unit per character, two for characters outside the Basic
//     Multilingual Plane (most emoji), which are sent as a surrogate pair.
//
// A body that fits a single segment may use 160 septets (GSM-7) or 70 UTF-16
// units (UCS-2). A longer body is sent as a concatenated message whose parts
// each carry a 6-octet user data header, leaving 153 septets or 67 units per
// segment. An escape pair or a surrogate pair is never split across two
// segments: if one would straddle a boundary, the whole character moves to the
// next segment, so a segment may carry one unit fewer than its capacity.
//
// Twilio's "smart encoding" (replacing curly quotes and similar look-alikes
// with GSM-7 characters) is not applied here: a curly quote makes the body
// UCS-2. Callers that want smart encoding must substitute characters before
// calling [Analyze].
package sms

// Encoding is the character encoding an SMS body is sent with.
type Encoding string

const (
	// GSM7 is the GSM 03.38 7-bit default alphabet, including its extension
	// table.
	GSM7 Encoding = "GSM-7"
	// UCS2 is the 16-bit encoding used when a body contains any character
	// outside GSM-7. Characters outside the Basic Multilingual Plane are sent
	// as UTF-16 surrogate pairs.
	UCS2 Encoding = "UCS-2"
)

// MaxChars is the longest body, in Unicode code points, that Twilio accepts
// for a single message (its 1,600 character limit). It is counted in code
// points, as [Info.Chars] is, not in bytes, septets or UTF-16 units. Analyze
// does not enforce it; callers compare it with Info.Chars.
const MaxChars = 1600

// Segment capacities, in septets (GSM-7) or UTF-16 code units (UCS-2).
const (
	gsmSingle = 160 // a GSM-7 body that fits one segment
	gsmMulti  = 153 // per segment of a concatenated GSM-7 body
	ucsSingle = 70  // a UCS-2 body that fits one segment
	ucsMulti  = 67  // per segment of a concatenated UCS-2 body
)

// Info describes how an SMS body will be sent.
type Info struct {
	// Encoding is GSM7 if every character is in the GSM 03.38 basic or
	// extension table, UCS2 otherwise. The empty body is reported as GSM7.
	Encoding Encoding
	// Segments is the number of SMS segments the body is split into. It is
	// 0 only for the empty body, which Twilio rejects as invalid; any
	// non-empty body needs at least one segment.
	Segments int
	// Units is the encoded length: septets for GSM-7 (extension-table
	// characters count 2), UTF-16 code units for UCS-2 (characters outside
	// the Basic Multilingual Plane count 2).
	Units int
	// Chars is the number of Unicode code points in the body, the unit of
	// Twilio's body length limit (see MaxChars).
	Chars int
}

// Analyze reports the encoding, segment count and lengths of an SMS body.
//
// The body should be valid UTF-8. Each byte of an invalid UTF-8 sequence is
// counted as one U+FFFD replacement character (as a Go range loop and
// utf8.RuneCountInString do): it is one code point, is not in GSM-7, and
// therefore makes the body UCS-2, costing one UTF-16 unit.
//
// Segments are counted by greedy packing, so escape pairs and surrogate pairs
// that would straddle a segment boundary are moved whole into the next
// segment. Analyze does not allocate.
func Analyze(body string) Info {
	if body == "" {
		return Info{Encoding: GSM7}
	}

	// One pass computes both encodings' lengths and greedy multi-part
	// packings; which one applies is known only at the end. Each packing
	// starts with one segment and opens a new one whenever the next
	// character does not fit whole into the current one.
	var (
		chars            int
		gsm              = true
		septets, units   int // total GSM-7 / UCS-2 length
		gsmSegs, ucsSegs = 1, 1
		gsmFill, ucsFill int // units used in the current segment
	)
	for _, r := range body {
		chars++

		ucsCost := 1
		if r >= 0x10000 {
			ucsCost = 2 // surrogate pair
		}
		units += ucsCost
		if ucsFill+ucsCost > ucsMulti {
			ucsSegs++
			ucsFill = 0
		}
		ucsFill += ucsCost

		if !gsm {
			continue
		}
		var gsmCost int
		if r < 0x80 {
			gsmCost = int(asciiSeptets[r])
		} else {
			gsmCost = nonASCIISeptets(r)
		}
		if gsmCost == 0 {
			gsm = false
			continue
		}
		septets += gsmCost
		if gsmFill+gsmCost > gsmMulti {
			gsmSegs++
			gsmFill = 0
		}
		gsmFill += gsmCost
	}

	if gsm {
		if septets <= gsmSingle {
			gsmSegs = 1
		}
		return Info{Encoding: GSM7, Segments: gsmSegs, Units: septets, Chars: chars}
	}
	if units <= ucsSingle {
		ucsSegs = 1
	}
	return Info{Encoding: UCS2, Segments: ucsSegs, Units: units, Chars: chars}
}

// asciiSeptets gives, for each ASCII code point, its cost in GSM-7 septets:
// 1 for the basic table, 2 for the extension table, 0 if it is not GSM-7.
var asciiSeptets = func() (t [0x80]uint8) {
	// Basic table characters that are also ASCII. Note the absence of `
	// (backtick), tab and other control characters, and DEL.
	const basic = "\n\r !\"#$%&'()*+,-./0123456789:;<=>?@" +
		"ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
	// Extension table characters that are ASCII, including form feed.
	const ext = "\f^{}\\[~]|"
	for i := 0; i < len(basic); i++ {
		t[basic[i]] = 1
	}
	for i := 0; i < len(ext); i++ {
		t[ext[i]] = 2
	}
	return t
}()

// nonASCIISeptets gives the GSM-7 cost in septets of a code point of U+0080
// or above: 1 for the basic table, 2 for the euro sign (extension table), 0
// if it is not GSM-7.
func nonASCIISeptets(r rune) int {
	switch r {
	case '£', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', 'Ø', 'ø', 'Å', 'å',
		'Δ', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ',
		'Æ', 'æ', 'ß', 'É', '¤', '¡', 'Ä', 'Ö', 'Ñ', 'Ü', '§',
		'¿', 'ä', 'ö', 'ñ', 'ü', 'à':
		return 1
	case '€':
		return 2
	}
	return 0
}
