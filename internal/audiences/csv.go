package audiences

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/patientmsg/gateway/internal/address"
	"github.com/patientmsg/gateway/internal/consent"
)

// Limits of an uploaded file; ParseOptions may change the first three.
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
	// ColName is accepted and ignored (reported in IgnoredColumns, like
	// unknown columns): names are not needed to reach anyone.
	ColName = "name"
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
	// Recipients are the valid, distinct recipients in file order. They
	// are left out of the JSON form, so that encoding a result for a
	// response or by mistake for a log never copies them.
	Recipients []Recipient `json:"-"`
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
	// MaxRecipients bounds the distinct recipients (0:
	// DefaultMaxRecipients); the data rows, blank ones excepted, are
	// bounded to twice as many.
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
// column, with more than MaxRecipients recipients or more than twice as
// many rows; its message says what to change and never quotes the file's
// data. Rows that cannot be used are never an error: they are reported in
// the result.
//
// Rows are validated on every CPU: libphonenumber takes some 30 µs a
// number, so a file of 200,000 phone numbers takes about 3 CPU-seconds.
func ParseCSV(r io.Reader, o ParseOptions) (*ParseResult, error) {
	if o.DefaultRegion != "" && !address.KnownRegion(o.DefaultRegion) {
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
	batch := make([]pendingRow, 0, batchSize)
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return p.flush(batch)
		}
		var row pendingRow
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			row = pendingRow{line: pe.StartLine, reason: quoteProblem(pe, cr.InputOffset() >= int64(len(data)))}
		} else if err != nil {
			return fmt.Errorf("audiences: reading the file: %w", err)
		} else {
			line, _ := cr.FieldPos(0)
			var blank bool
			if row, blank = p.fields(rec, line); blank {
				continue
			}
		}
		if p.res.Rows++; p.res.Rows > 2*p.o.MaxRecipients {
			return fmt.Errorf("%w: the file has more than %d rows (line %d is row %d), at most %d recipients are allowed; split it into several files", ErrTooManyRecipients, 2*p.o.MaxRecipients, row.line, p.res.Rows, p.o.MaxRecipients)
		}
		if batch = append(batch, row); len(batch) == batchSize {
			if err := p.flush(batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
}

// batchSize is the number of rows validated together, in parallel.
const batchSize = 4096

// pendingRow is a data row waiting for validation.
type pendingRow struct {
	line int
	r    Recipient
	// reason is set when the row cannot be used.
	reason string
}

// flush validates a batch of rows on every CPU (libphonenumber takes tens
// of microseconds a number), then accepts or reports them in line order.
func (p *parser) flush(batch []pendingRow) error {
	workers := min(runtime.GOMAXPROCS(0), (len(batch)+255)/256)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(batch); i += workers {
				if row := &batch[i]; row.reason == "" {
					if err := ValidateRecipient(&row.r, p.o.DefaultRegion); err != nil {
						row.reason = err.Error()
					}
				}
			}
		}()
	}
	wg.Wait()
	for _, row := range batch {
		if err := p.accept(row); err != nil {
			return err
		}
	}
	return nil
}

// quoteProblem explains a CSV syntax error of a row; atEOF says whether
// the reader has reached the end of the file.
func quoteProblem(pe *csv.ParseError, atEOF bool) string {
	if pe.StartLine != pe.Line && atEOF {
		return fmt.Sprintf("a quoted field that starts on this line is never closed, so lines %d to %d (the end of the file) were read as one row and skipped: close the quote, and write a quote inside a quoted field twice (\"\")", pe.StartLine, pe.Line)
	}
	if pe.StartLine != pe.Line {
		return fmt.Sprintf("malformed quotes in a field that starts on this line, so lines %d to %d were read as one row and skipped: a quote inside a quoted field is written twice (\"\")", pe.StartLine, pe.Line)
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

// fields picks the columns read from a data row; blank reports a row
// whose fields are all empty.
func (p *parser) fields(rec []string, line int) (row pendingRow, blank bool) {
	blank = true
	for _, f := range rec {
		if strings.TrimSpace(f) != "" {
			blank = false
			break
		}
	}
	row.line = line
	if blank {
		return row, true
	}
	if len(rec) != p.width {
		row.reason = fmt.Sprintf("the row has %d fields but the header has %d columns (a separator too many or missing, or a field with a separator that is not in quotes?)", len(rec), p.width)
		return row, false
	}
	for _, f := range [...]struct {
		col string
		dst *string
	}{
		{ColPhone, &row.r.Phone}, {ColEmail, &row.r.Email}, {ColWeChat, &row.r.WeChatOpenID},
		{ColLocale, &row.r.Locale}, {ColTimeZone, &row.r.TimeZone}, {ColExternalID, &row.r.ExternalID},
	} {
		i, ok := p.cols[f.col]
		if !ok {
			continue
		}
		if len(rec[i]) > MaxFieldBytes {
			return pendingRow{line: line, reason: fmt.Sprintf("the %s field is longer than %d bytes", f.col, MaxFieldBytes)}, false
		}
		*f.dst = rec[i]
	}
	return row, false
}

// accept adds a validated row's recipient unless it is a duplicate, or
// reports the row; it returns an error only when the file has too many
// recipients.
func (p *parser) accept(row pendingRow) error {
	if row.reason != "" {
		p.invalid(row.line, row.reason)
		return nil
	}
	ids := row.r.Identities()
	for _, id := range ids {
		if first, dup := p.seen[id]; dup {
			p.res.Duplicates++
			p.report(row.line, fmt.Sprintf("duplicate of line %d (same %s); the row is skipped", first, id.Kind))
			return nil
		}
	}
	if len(p.res.Recipients) >= p.o.MaxRecipients {
		return fmt.Errorf("%w: the file has more than %d recipients (line %d is recipient %d); split it into several files", ErrTooManyRecipients, p.o.MaxRecipients, row.line, p.o.MaxRecipients+1)
	}
	for _, id := range ids {
		p.seen[id] = row.line
	}
	p.res.Recipients = append(p.res.Recipients, row.r)
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
