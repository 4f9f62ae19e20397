package audiences

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/patientmsg/gateway/consent"
)

// Limits of an uploaded file; ParseOptions may change the first two.
const (
	DefaultMaxRecipients = 200_000
	DefaultMaxBytes      = 20 << 20 // 20 MiB
	DefaultMaxErrors     = 1_000
	MaxColumns           = 64
	MaxFieldBytes        = 1 << 10 // 1 KiB, for every column that is read
)

// Errors of a file that cannot be used at all; ParseCSV wraps them with a
// message saying what to change, so test them with errors.Is and show the
// message.
var (
	ErrTooLarge          = errors.New("audiences: the file is too large")
	ErrTooManyRecipients = errors.New("audiences: too many recipients")
	ErrNotUTF8           = errors.New("audiences: the file is not UTF-8 CSV text")
	ErrNoHeader          = errors.New("audiences: no usable header row")
	ErrNoAddressColumn   = errors.New("audiences: no address column")
	ErrBadOptions        = errors.New("audiences: invalid parse options")
)

// Column names of the CSV header (compared case-insensitively).
const (
	ColPhone      = "phone"
	ColEmail      = "email"
	ColWeChat     = "wechat_openid"
	ColLocale     = "locale"
	ColTimeZone   = "timezone"
	ColExternalID = "external_id"
	ColName       = "name"
)

// RowError is one row of the file that was skipped, with its physical line
// number (the header is line 1) and why. The reason may quote a value the
// uploader gave (see the package documentation): return it to the
// uploader, never log it.
type RowError struct {
	Line   int    `json:"line"`
	Reason string `json:"reason"`
}

// String returns "line 7: phone \"12ab\" is not a valid number".
func (e RowError) String() string { return "line " + strconv.Itoa(e.Line) + ": " + e.Reason }

// ParseResult is what ParseCSV made of a file.
type ParseResult struct {
	// Recipients are the valid, distinct recipients in file order.
	Recipients []Recipient `json:"recipients"`
	// Errors lists skipped rows in line order: invalid rows and
	// duplicates. At most ParseOptions.MaxErrors are listed; ErrorsOmitted
	// counts the rest.
	Errors        []RowError `json:"errors"`
	ErrorsOmitted int        `json:"errors_omitted"`
	// Invalid counts the rows skipped because they could not be used.
	Invalid int `json:"invalid"`
	// Duplicates counts the rows skipped because an address of theirs
	// belongs to an earlier row's recipient.
	Duplicates int `json:"duplicates"`
	// IgnoredColumns names the header's columns that were not read (name
	// and unknown columns), as written in the header; an unnamed column is
	// shown as "(unnamed column N)".
	IgnoredColumns []string `json:"ignored_columns"`
	// Rows counts the data rows, blank ones excepted:
	// Rows = len(Recipients) + Invalid + Duplicates.
	Rows int `json:"rows"`
}

// ParseOptions tune ParseCSV. The zero value requires international
// numbers and applies the default limits.
type ParseOptions struct {
	// DefaultRegion is the ISO 3166 region ("US", "CN") of phone numbers
	// written without + and country code; "" requires the + form.
	DefaultRegion string
	// MaxRecipients bounds the distinct recipients (0: DefaultMaxRecipients).
	MaxRecipients int
	// MaxBytes bounds the file's size (0: DefaultMaxBytes).
	MaxBytes int64
	// MaxErrors bounds the row errors listed (0: DefaultMaxErrors); the
	// others are only counted.
	MaxErrors int
}

// ParseCSV reads an audience file (see the package documentation for its
// format) and returns its valid, distinct recipients with a report of
// every row it skipped. It returns an error, wrapping one of the Err…
// values above, only for a file that cannot be used at all: larger than
// MaxBytes, not UTF-8 text, without a header row naming an address
// column, or with more than MaxRecipients recipients; its message says
// what to change. Rows that cannot be used are never an error: they are
// reported in the result.
func ParseCSV(r io.Reader, o ParseOptions) (*ParseResult, error) {
	if o.DefaultRegion != "" && knownRegion(o.DefaultRegion) == "" {
		return nil, fmt.Errorf("%w: default region %q is not an ISO 3166 region code such as US or CN", ErrBadOptions, o.DefaultRegion)
	}
	if o.MaxRecipients <= 0 {
		o.MaxRecipients = DefaultMaxRecipients
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxErrors <= 0 {
		o.MaxErrors = DefaultMaxErrors
	}
	data, err := io.ReadAll(io.LimitReader(r, o.MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("audiences: reading the file: %w", err)
	}
	if int64(len(data)) > o.MaxBytes {
		return nil, fmt.Errorf("%w: it is larger than %s; split it into several files", ErrTooLarge, sizeString(o.MaxBytes))
	}
	data, err = textOf(data)
	if err != nil {
		return nil, err
	}
	p := &parser{o: o, res: &ParseResult{}, seen: map[consent.Identity]int{}}
	if err := p.parse(data); err != nil {
		return nil, err
	}
	if p.res.Recipients == nil {
		p.res.Recipients = []Recipient{}
	}
	if p.res.Errors == nil {
		p.res.Errors = []RowError{}
	}
	if p.res.IgnoredColumns == nil {
		p.res.IgnoredColumns = []string{}
	}
	return p.res, nil
}

// textOf checks that data is UTF-8 text and returns it without a byte
// order mark, with old Mac line ends (CR alone) turned into LF.
func textOf(data []byte) ([]byte, error) {
	switch {
	case len(bytes.TrimSpace(data)) == 0 || bytes.Equal(bytes.TrimSpace(data), []byte("\xef\xbb\xbf")):
		return nil, fmt.Errorf("%w: the file is empty; its first line must be a header row naming the columns, e.g. phone,email,locale,timezone", ErrNoHeader)
	case bytes.HasPrefix(data, []byte("PK\x03\x04")):
		return nil, fmt.Errorf("%w: it is a spreadsheet (.xlsx), not CSV; save it as \"CSV UTF-8 (comma delimited)\" and upload that", ErrNotUTF8)
	case bytes.HasPrefix(data, []byte("\xff\xfe")), bytes.HasPrefix(data, []byte("\xfe\xff")):
		return nil, fmt.Errorf("%w: it is UTF-16 text; save it as \"CSV UTF-8 (comma delimited)\" and upload that", ErrNotUTF8)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(data) {
		line := 1
		for i := 0; i < len(data); {
			r, n := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			if r == '\n' {
				line++
			}
			i += n
		}
		return nil, fmt.Errorf("%w: line %d has bytes that are not UTF-8 (a file saved in a legacy encoding such as GBK or Windows-1252?); save it as \"CSV UTF-8 (comma delimited)\" and upload that", ErrNotUTF8, line)
	}
	if bytes.IndexByte(data, 0) >= 0 {
		return nil, fmt.Errorf("%w: it contains NUL bytes, so it is not a text file; save it as \"CSV UTF-8 (comma delimited)\" and upload that", ErrNotUTF8)
	}
	if bytes.IndexByte(data, '\n') < 0 && bytes.IndexByte(data, '\r') >= 0 {
		data = bytes.ReplaceAll(data, []byte("\r"), []byte("\n"))
	}
	return data, nil
}

// sizeString writes a byte count for people: "20 MiB", "1500 bytes".
func sizeString(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return strconv.FormatInt(n>>20, 10) + " MiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// parser holds the state of one ParseCSV call.
type parser struct {
	o   ParseOptions
	res *ParseResult
	// cols maps a known column to its index in the header.
	cols map[string]int
	// width is the number of columns of the header.
	width int
	// seen maps every identity of an accepted recipient to its line.
	seen map[consent.Identity]int
}

// delimiter picks the field separator from the header line: a comma unless
// the line has none and has a semicolon or a tab.
func delimiter(data []byte) rune {
	first := data
	if i := bytes.IndexByte(first, '\n'); i >= 0 {
		first = first[:i]
	}
	switch {
	case bytes.IndexByte(first, ',') >= 0:
		return ','
	case bytes.IndexByte(first, ';') >= 0:
		return ';'
	case bytes.IndexByte(first, '\t') >= 0:
		return '\t'
	}
	return ','
}

func (p *parser) parse(data []byte) error {
	cr := csv.NewReader(bytes.NewReader(data))
	cr.Comma = delimiter(bytes.TrimLeft(data, "\r\n"))
	cr.FieldsPerRecord = -1 // rows of the wrong width are reported, not fatal
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return fmt.Errorf("%w: the header row (line %d) is not valid CSV: %v", ErrNoHeader, pe.StartLine, pe.Err)
		}
		return fmt.Errorf("%w: the file has no header row naming the columns, e.g. phone,email,locale,timezone", ErrNoHeader)
	}
	headerLine, _ := cr.FieldPos(0)
	if err := p.readHeader(header, headerLine); err != nil {
		return err
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			p.res.Rows++
			p.invalid(pe.StartLine, quoteProblem(pe))
			continue
		} else if err != nil {
			return fmt.Errorf("audiences: reading the file: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if err := p.row(rec, line); err != nil {
			return err
		}
	}
}

// quoteProblem explains a CSV syntax error of a row.
func quoteProblem(pe *csv.ParseError) string {
	if pe.StartLine != pe.Line {
		return fmt.Sprintf("a quoted field that starts on this line is not closed properly (the problem shows on line %d): a quote inside a quoted field is written twice (\"\")", pe.Line)
	}
	if errors.Is(pe.Err, csv.ErrBareQuote) {
		return "a field has a quote (\") but does not start with one: put the whole field in quotes and write the quote twice (\"\")"
	}
	return "malformed quotes: a quoted field must end with a quote followed by a separator or the end of the line, and a quote inside it is written twice (\"\")"
}

// readHeader maps the header's columns.
func (p *parser) readHeader(header []string, line int) error {
	if len(header) > MaxColumns {
		return fmt.Errorf("%w: the header row (line %d) has %d columns; at most %d are allowed: remove the columns the broadcast does not need", ErrNoHeader, line, len(header), MaxColumns)
	}
	p.width = len(header)
	p.cols = map[string]int{}
	for i, raw := range header {
		if len(raw) > MaxFieldBytes {
			return fmt.Errorf("%w: column %d of the header row (line %d) is longer than %d bytes; the first line must be a header row naming the columns", ErrNoHeader, i+1, line, MaxFieldBytes)
		}
		name := strings.TrimSpace(raw)
		switch key := strings.ToLower(name); key {
		case ColPhone, ColEmail, ColWeChat, ColLocale, ColTimeZone, ColExternalID:
			if j, dup := p.cols[key]; dup {
				return fmt.Errorf("%w: column %q appears twice in the header row (columns %d and %d); keep one", ErrNoHeader, key, j+1, i+1)
			}
			p.cols[key] = i
		default:
			if name == "" {
				name = fmt.Sprintf("(unnamed column %d)", i+1)
			} else if utf8.RuneCountInString(name) > 64 {
				name = string([]rune(name)[:64]) + "…"
			}
			p.res.IgnoredColumns = append(p.res.IgnoredColumns, name)
		}
	}
	_, phone := p.cols[ColPhone]
	_, email := p.cols[ColEmail]
	_, wechat := p.cols[ColWeChat]
	if !phone && !email && !wechat {
		// The header's cells are not quoted back: without a header row
		// they would be a patient's data.
		return fmt.Errorf("%w: the header row (line %d) names none of the columns phone, email and wechat_openid; the first line must be a header row naming the columns, e.g. phone,email,locale,timezone", ErrNoAddressColumn, line)
	}
	return nil
}

// row reads one data row; it returns an error only when the file has too
// many recipients.
func (p *parser) row(rec []string, line int) error {
	blank := true
	for _, f := range rec {
		if strings.TrimSpace(f) != "" {
			blank = false
			break
		}
	}
	if blank {
		return nil
	}
	p.res.Rows++
	if len(rec) != p.width {
		p.invalid(line, fmt.Sprintf("the row has %d fields but the header has %d columns (a separator too many or missing, or a field with a separator that is not in quotes?)", len(rec), p.width))
		return nil
	}
	get := func(col string) (string, bool) {
		i, ok := p.cols[col]
		if !ok {
			return "", true
		}
		if len(rec[i]) > MaxFieldBytes {
			p.invalid(line, fmt.Sprintf("the %s field is longer than %d bytes", col, MaxFieldBytes))
			return "", false
		}
		return rec[i], true
	}
	var r Recipient
	for _, f := range []struct {
		col string
		dst *string
	}{
		{ColPhone, &r.Phone}, {ColEmail, &r.Email}, {ColWeChat, &r.WeChatOpenID},
		{ColLocale, &r.Locale}, {ColTimeZone, &r.TimeZone}, {ColExternalID, &r.ExternalID},
	} {
		v, ok := get(f.col)
		if !ok {
			return nil
		}
		*f.dst = v
	}
	if err := ValidateRecipient(&r, p.o.DefaultRegion); err != nil {
		p.invalid(line, err.Error())
		return nil
	}
	ids := r.Identities()
	for _, id := range ids {
		if first, dup := p.seen[id]; dup {
			p.res.Duplicates++
			p.report(line, fmt.Sprintf("duplicate of line %d (same %s); the row is skipped", first, id.Kind))
			return nil
		}
	}
	if len(p.res.Recipients) >= p.o.MaxRecipients {
		return fmt.Errorf("%w: the file has more than %d recipients (line %d is recipient %d); split it into several files", ErrTooManyRecipients, p.o.MaxRecipients, line, p.o.MaxRecipients+1)
	}
	for _, id := range ids {
		p.seen[id] = line
	}
	p.res.Recipients = append(p.res.Recipients, r)
	return nil
}

// invalid counts and reports a row that cannot be used.
func (p *parser) invalid(line int, reason string) {
	p.res.Invalid++
	p.report(line, reason)
}

// report lists a skipped row while the list has room.
func (p *parser) report(line int, reason string) {
	if len(p.res.Errors) >= p.o.MaxErrors {
		p.res.ErrorsOmitted++
		return
	}
	p.res.Errors = append(p.res.Errors, RowError{Line: line, Reason: reason})
}
