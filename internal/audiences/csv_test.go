package audiences

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// crlf joins lines with CRLF line ends.
func crlf(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n" }

func parse(t *testing.T, data string, o ParseOptions) *ParseResult {
	t.Helper()
	res, err := ParseCSV(strings.NewReader(data), o)
	if err != nil {
		t.Fatalf("ParseCSV: %v", err)
	}
	if res.Rows != len(res.Recipients)+res.Invalid+res.Duplicates {
		t.Fatalf("rows %d != recipients %d + invalid %d + duplicates %d", res.Rows, len(res.Recipients), res.Invalid, res.Duplicates)
	}
	return res
}

func TestParseCSVReportsEveryRow(t *testing.T) {
	data := "\ufeff" + crlf(
		` Phone ,EMAIL,WeChat_OpenID,Locale,TimeZone,External_ID,Name,Ward`, // 1
		`+8613800138000,a@Example.COM,,zh-CN,Asia/Shanghai,S-1,Alice,3B`,    // 2 good
		`+1 650 253 0000,,,en-us,America/Los_Angeles,S-2,Bob,ICU`,           // 3 good
		`12ab,,,,,S-3,Carol,`,                               // 4 bad phone
		`,not-an-email,,,,S-4,,`,                            // 5 bad email
		`,,oA1_b-2,,Mars/Base,S-5,,`,                        // 6 bad zone
		`,,oA1_b-3,xx-!!,,S-6,,`,                            // 7 bad locale
		`,,,,,S-7,Dave,`,                                    // 8 no address
		`+8613800138001,c@example.org`,                      // 9 wrong column count
		`"+44 20 8366 1177",,,en-GB,Europe/London,S-8,"Eve`, // 10 good, with a
		`Smith",`,                              // 11 quoted name spanning two lines
		`+86 138 0013 8000,,,,,S-9,,`,          // 12 duplicate of 2 by phone
		`,a@EXAMPLE.com,,,,S-10,,`,             // 13 duplicate of 2 by email
		`,,,,,,,`,                              // 14 blank
		``,                                     // 15 empty line
		`,,oWx_1,fr,Europe/Paris,S-11,,`,       // 16 good
		`+8613800138002,x"y@example.org,,,,,,`, // 17 bare quote
		`,,oA1_b-9,,,S-12,,`,                   // 18 good
		`,,oWx_1,,,S-13,,`,                     // 19 duplicate of 16 by openid
		`,,o/bad,,,S-14,,`,                     // 20 bad openid
		`,,oA1_b-10,,,"`+strings.Repeat("x", MaxFieldBytes+1)+`",,`, // 21 field too long
	)
	res := parse(t, data, ParseOptions{})
	want := []Recipient{
		{Phone: "+8613800138000", Email: "a@example.com", Locale: "zh-CN", TimeZone: "Asia/Shanghai", ExternalID: "S-1"},
		{Phone: "+16502530000", Locale: "en-US", TimeZone: "America/Los_Angeles", ExternalID: "S-2"},
		{Phone: "+442083661177", Locale: "en-GB", TimeZone: "Europe/London", ExternalID: "S-8"},
		{WeChatOpenID: "oWx_1", Locale: "fr", TimeZone: "Europe/Paris", ExternalID: "S-11"},
		{WeChatOpenID: "oA1_b-9", ExternalID: "S-12"},
	}
	if !reflect.DeepEqual(res.Recipients, want) {
		t.Errorf("recipients:\n got %+v\nwant %+v", res.Recipients, want)
	}
	wantErrs := []struct {
		line int
		has  string
	}{
		{4, `phone "12ab" is not a valid number`},
		{5, `email "not-an-email" is not a valid address`},
		{6, `timezone "Mars/Base" is not an IANA time zone`},
		{7, `locale "xx-!!" is not a language tag`},
		{8, "no address"},
		{9, "the row has 2 fields but the header has 8 columns"},
		{12, "duplicate of line 2 (same phone)"},
		{13, "duplicate of line 2 (same email)"},
		{17, "quote"},
		{19, "duplicate of line 16 (same wechat)"},
		{20, "is not a WeChat openid"},
		{21, fmt.Sprintf("the external_id field is longer than %d bytes", MaxFieldBytes)},
	}
	if len(res.Errors) != len(wantErrs) {
		t.Fatalf("got %d errors, want %d: %v", len(res.Errors), len(wantErrs), res.Errors)
	}
	for i, w := range wantErrs {
		if got := res.Errors[i]; got.Line != w.line || !strings.Contains(got.Reason, w.has) {
			t.Errorf("error %d: got %q, want line %d with %q", i, got, w.line, w.has)
		}
	}
	if got := res.Errors[0].String(); got != `line 4: phone "12ab" is not a valid number` {
		t.Errorf("RowError.String() = %q", got)
	}
	if res.Duplicates != 3 || res.Invalid != 9 || res.Rows != 17 || res.ErrorsOmitted != 0 {
		t.Errorf("duplicates %d invalid %d rows %d omitted %d, want 3, 9, 17, 0", res.Duplicates, res.Invalid, res.Rows, res.ErrorsOmitted)
	}
	if want := []string{"Name", "Ward"}; !reflect.DeepEqual(res.IgnoredColumns, want) {
		t.Errorf("ignored columns %q, want %q", res.IgnoredColumns, want)
	}
	for _, e := range res.Errors {
		for _, secret := range []string{"Alice", "Carol", "Dave", "oA1_b", "S-1", "o/bad"} {
			if strings.Contains(e.Reason, secret) {
				t.Errorf("reason %q quotes a name, openid or external id", e)
			}
		}
	}
}

func TestParseCSVDefaultRegion(t *testing.T) {
	data := "phone\n13800138000\n+8613900139000\n"
	res := parse(t, data, ParseOptions{DefaultRegion: "CN"})
	if len(res.Recipients) != 2 || res.Recipients[0].Phone != "+8613800138000" || res.Recipients[1].Phone != "+8613900139000" {
		t.Fatalf("recipients %+v, errors %v", res.Recipients, res.Errors)
	}
	res = parse(t, data, ParseOptions{})
	if len(res.Recipients) != 1 || len(res.Errors) != 1 || res.Errors[0].Line != 2 || !strings.Contains(res.Errors[0].Reason, "no country code") {
		t.Fatalf("without a default region: recipients %+v, errors %v", res.Recipients, res.Errors)
	}
	if _, err := ParseCSV(strings.NewReader(data), ParseOptions{DefaultRegion: "Narnia"}); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("unknown region: %v, want ErrBadOptions", err)
	}
}

func TestParseCSVSeparatorsAndLineEnds(t *testing.T) {
	for name, data := range map[string]string{
		"LF":            "email,locale\na@example.org,en\n\nb@example.org,fr",
		"CRLF":          "email,locale\r\na@example.org,en\r\n\r\nb@example.org,fr\r\n",
		"CR":            "email,locale\ra@example.org,en\r\rb@example.org,fr\r",
		"semicolon":     "email;locale\na@example.org;en\n\nb@example.org;fr\n",
		"tab":           "email\tlocale\na@example.org\ten\n\nb@example.org\tfr\n",
		"blank first":   "\n\nemail,locale\na@example.org,en\nb@example.org,fr\n",
		"blank first ;": "\r\n\r\nemail;locale\na@example.org;en\nb@example.org;fr\n",
		"quoted names":  "\"email\",\"LOCALE\"\na@example.org,en\n\nb@example.org,fr\n",
	} {
		t.Run(name, func(t *testing.T) {
			res := parse(t, data, ParseOptions{})
			if len(res.Recipients) != 2 || res.Recipients[1].Locale != "fr" || len(res.Errors) != 0 {
				t.Fatalf("recipients %+v, errors %v", res.Recipients, res.Errors)
			}
		})
	}
	// Lines count as in the file, with the header at line 1 whatever
	// precedes it: here a bad row on line 6.
	res := parse(t, "\n\nemail\r\na@example.org\r\n\r\nbad\r\n", ParseOptions{})
	if len(res.Errors) != 1 || res.Errors[0].Line != 6 {
		t.Fatalf("errors %v, want one on line 6", res.Errors)
	}
}

func TestParseCSVUnusableFiles(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want error
		has  string
	}{
		{"empty", "", ErrNoHeader, "empty"},
		{"BOM only", "\ufeff\r\n", ErrNoHeader, "empty"},
		{"no header", "+8613800138000,a@example.org\n", ErrNoAddressColumn, "header row"},
		{"no address column", "name,locale\nAnn,en\n", ErrNoAddressColumn, "phone, email and wechat_openid"},
		{"twice", "phone,Phone\n+8613800138000,+8613800138000\n", ErrNoHeader, `"phone" appears twice`},
		{"too many columns", "phone" + strings.Repeat(",x", MaxColumns) + "\n", ErrNoHeader, "at most 64"},
		{"bad header quotes", "\"phone,email\n", ErrNoHeader, "not valid CSV"},
		{"xlsx", "PK\x03\x04\x14\x00\x06\x00", ErrNotUTF8, ".xlsx"},
		{"UTF-16", "\xff\xfep\x00h\x00o\x00n\x00e\x00", ErrNotUTF8, "UTF-16"},
		{"GBK", "phone,name\n+8613800138000,\xd5\xc5\xc8\xfd\n", ErrNotUTF8, "line 2"},
		{"NUL", "phone\n+8613800138000\x00\n", ErrNotUTF8, "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := ParseCSV(strings.NewReader(tc.data), ParseOptions{})
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.has) {
				t.Fatalf("got %v, %v; want %v with %q", res, err, tc.want, tc.has)
			}
			if strings.Contains(err.Error(), "8613800138000") {
				t.Fatalf("the error quotes a row's data: %v", err)
			}
		})
	}
}

func TestParseCSVLimits(t *testing.T) {
	rows := func(n int) string {
		var b strings.Builder
		b.WriteString("email\n")
		for i := range n {
			fmt.Fprintf(&b, "p%d@example.org\n", i)
		}
		return b.String()
	}
	t.Run("recipients", func(t *testing.T) {
		res := parse(t, rows(3)+"p0@example.org\n", ParseOptions{MaxRecipients: 3})
		if len(res.Recipients) != 3 || res.Duplicates != 1 {
			t.Fatalf("at the limit with a duplicate: %d recipients, %d duplicates", len(res.Recipients), res.Duplicates)
		}
		_, err := ParseCSV(strings.NewReader(rows(4)), ParseOptions{MaxRecipients: 3})
		if !errors.Is(err, ErrTooManyRecipients) || !strings.Contains(err.Error(), "more than 3 recipients") {
			t.Fatalf("over the limit: %v", err)
		}
	})
	t.Run("default recipients", func(t *testing.T) {
		if testing.Short() {
			t.Skip("parses 200,001 rows")
		}
		_, err := ParseCSV(strings.NewReader(rows(DefaultMaxRecipients+1)), ParseOptions{})
		if !errors.Is(err, ErrTooManyRecipients) || !strings.Contains(err.Error(), "more than 200000 recipients") {
			t.Fatalf("over the default limit: %v", err)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		data := rows(10)
		if _, err := ParseCSV(strings.NewReader(data), ParseOptions{MaxBytes: int64(len(data))}); err != nil {
			t.Fatalf("at the limit: %v", err)
		}
		_, err := ParseCSV(strings.NewReader(data), ParseOptions{MaxBytes: int64(len(data) - 1)})
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("over the limit: %v", err)
		}
	})
	t.Run("default bytes", func(t *testing.T) {
		// An endless file is cut at the limit: ParseCSV must not read it all.
		endless := io.MultiReader(strings.NewReader("email\n"), &repeat{line: []byte("a@example.org\n")})
		_, err := ParseCSV(endless, ParseOptions{})
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "larger than 20 MiB") {
			t.Fatalf("over 20 MiB: %v", err)
		}
	})
	t.Run("errors listed", func(t *testing.T) {
		res := parse(t, "email\nbad1\nbad2\nok@example.org\nbad3\nok@example.org\n", ParseOptions{MaxErrors: 2})
		if len(res.Errors) != 2 || res.ErrorsOmitted != 2 || res.Invalid != 3 || res.Duplicates != 1 || res.Errors[1].Line != 3 {
			t.Fatalf("errors %v omitted %d invalid %d duplicates %d", res.Errors, res.ErrorsOmitted, res.Invalid, res.Duplicates)
		}
	})
	t.Run("ignored columns are not bounded", func(t *testing.T) {
		res := parse(t, "email,notes\na@example.org,"+strings.Repeat("n", 4*MaxFieldBytes)+"\n", ParseOptions{})
		if len(res.Recipients) != 1 {
			t.Fatalf("a long ignored field rejected the row: %v", res.Errors)
		}
	})
}

// repeat is an endless reader of one line.
type repeat struct {
	line []byte
	off  int
}

func (r *repeat) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.line[r.off:])
		n += c
		r.off = (r.off + c) % len(r.line)
	}
	return n, nil
}

func TestParseCSVUnclosedQuote(t *testing.T) {
	res := parse(t, "email,external_id\na@example.org,1\nb@example.org,\"2\nc@example.org,3\n", ParseOptions{})
	if len(res.Recipients) != 1 || len(res.Errors) != 1 || res.Errors[0].Line != 3 {
		t.Fatalf("recipients %+v errors %v: want a@ kept and line 3 reported", res.Recipients, res.Errors)
	}
	if !strings.Contains(res.Errors[0].Reason, "lines 3 to 4 (the end of the file)") {
		t.Fatalf("reason %q does not say which lines were swallowed", res.Errors[0].Reason)
	}
	res = parse(t, "email,external_id\na@example.org,\"1\n\"x\nb@example.org,2\n", ParseOptions{})
	if len(res.Recipients) != 1 || len(res.Errors) != 1 || res.Errors[0].Line != 2 || !strings.Contains(res.Errors[0].Reason, "lines 2 to 3 were read as one row") {
		t.Fatalf("recipients %+v errors %v: want b@ kept and lines 2 to 3 reported", res.Recipients, res.Errors)
	}
}

func TestParseCSVIgnoredColumnsReportedOnce(t *testing.T) {
	res := parse(t, "Name,phone,,Notes\nAnn,+8613800138000,,x\nBob,+8613800138001,,y\n", ParseOptions{})
	if want := []string{"Name", "(unnamed column 3)", "Notes"}; !reflect.DeepEqual(res.IgnoredColumns, want) {
		t.Fatalf("ignored %q, want %q", res.IgnoredColumns, want)
	}
	if len(res.Recipients) != 2 || len(res.Errors) != 0 {
		t.Fatalf("recipients %+v errors %v", res.Recipients, res.Errors)
	}
}

func TestParseCSVEmptyResultIsNotNil(t *testing.T) {
	res := parse(t, "phone\n", ParseOptions{})
	if res.Recipients == nil || res.Errors == nil || res.IgnoredColumns == nil {
		t.Fatalf("nil slices in %+v: they would encode as JSON null", res)
	}
	if res.Rows != 0 {
		t.Fatalf("rows %d", res.Rows)
	}
}

func TestParseCSVRowsBounded(t *testing.T) {
	// Twice MaxRecipients rows are read, however many are invalid.
	data := "email\n" + strings.Repeat("bad\n", 4)
	if res := parse(t, data, ParseOptions{MaxRecipients: 2}); res.Invalid != 4 {
		t.Fatalf("invalid %d, want 4", res.Invalid)
	}
	_, err := ParseCSV(strings.NewReader(data+"bad\n"), ParseOptions{MaxRecipients: 2})
	if !errors.Is(err, ErrTooManyRecipients) || !strings.Contains(err.Error(), "more than 4 rows (line 6 is row 5)") {
		t.Fatalf("5 rows for 2 recipients: %v", err)
	}
}

func TestParseResultJSONLeavesRecipientsOut(t *testing.T) {
	res := parse(t, "phone\n+8613800138000\n", ParseOptions{})
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "8613800138000") || !strings.Contains(string(b), `"rows":1`) {
		t.Fatalf("JSON %s", b)
	}
}
