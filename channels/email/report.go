package email

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"regexp"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/htmlindex"
)

// Kind is what an inbound email is.
type Kind int

// Kinds of inbound email.
const (
	// KindOther is any other mail (an auto-reply, a report of another
	// type): it is accepted and changes nothing.
	KindOther Kind = iota
	// KindDSN is a delivery status notification (RFC 3464).
	KindDSN
	// KindComplaint is an abuse report in the Abuse Reporting Format
	// (RFC 5965): the recipient marked the message as spam.
	KindComplaint
	// KindReply is a person's message: a reply.
	KindReply
)

func (k Kind) String() string {
	switch k {
	case KindDSN:
		return "dsn"
	case KindComplaint:
		return "complaint"
	case KindReply:
		return "reply"
	}
	return "other"
}

// ErrMalformed is returned for mail that cannot be read: bad MIME, or a
// report without the part its type promises.
var ErrMalformed = errors.New("malformed message")

// Report is what an inbound email says, with nothing of its addresses.
type Report struct {
	Kind Kind
	// ID is a digest of the mail's own Message-ID (of its content when it
	// has none): the same mail delivered twice has the same ID.
	ID string
	// DSN: Action (failed, delayed, delivered, relayed, expanded), Status
	// ("5.1.1") and Diagnostic (the remote server's words, addresses
	// removed) of the recipient the report is most serious about.
	Action, Status, Diagnostic string
	// FeedbackType is an ARF report's type (abuse, fraud, virus, other).
	FeedbackType string
	// Subject is the mail's subject, decoded (a reply's).
	Subject string
	// Text is a reply's new text: the quoted message and the signature
	// below it removed.
	Text string
	// Auto says the mail was sent by a machine (Auto-Submitted, an
	// out-of-office), not typed as a reply.
	Auto bool
}

// Permanent says a DSN reports that the mail will not be delivered: its
// action is failed or, without an action, its status is 5.x.x. A delayed
// report (4.x.x) is transient.
func (r *Report) Permanent() bool {
	if r.Action != "" {
		return r.Action == "failed"
	}
	return strings.HasPrefix(r.Status, "5.")
}

// Transient says a DSN reports a delay: the remote server keeps trying.
func (r *Report) Transient() bool {
	if r.Action != "" {
		return r.Action == "delayed"
	}
	return strings.HasPrefix(r.Status, "4.")
}

// Delivered says a DSN reports delivery (RFC 3464 §2.3.3): its action is
// delivered and its status 2.x.x. A 2.x.x status without that action is
// no delivery report (see Relayed).
func (r *Report) Delivered() bool {
	return r.Action == "delivered" && strings.HasPrefix(r.Status, "2.")
}

// Relayed says a DSN reports that the mail left the reach of reports
// without a failure: relayed to a server that sends none, or expanded to
// a list or alias (RFC 3464 §2.3.3), or a 2.x.x status without a known
// action. No further report is to be expected, and none says delivered.
func (r *Report) Relayed() bool {
	switch r.Action {
	case "relayed", "expanded":
		return true
	case "":
		return strings.HasPrefix(r.Status, "2.")
	}
	return false
}

// Limits of what is kept from a report.
const (
	maxDiagnostic = 300
	maxReplyText  = 10000
	maxDepth      = 8
	maxParts      = 100
)

// ParseReport reads an inbound email: a DSN, an ARF complaint, or a reply.
func ParseReport(raw []byte) (*Report, error) {
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	r := &Report{Kind: KindReply}
	r.ID = digest(m.Header.Get("Message-Id"), raw)
	dec := mime.WordDecoder{CharsetReader: charsetReader}
	if s, err := dec.DecodeHeader(m.Header.Get("Subject")); err == nil {
		r.Subject = strings.TrimSpace(strings.ToValidUTF8(s, "\uFFFD"))
	}
	if auto := strings.ToLower(strings.TrimSpace(m.Header.Get("Auto-Submitted"))); auto != "" && auto != "no" ||
		m.Header.Get("X-Autoreply") != "" || m.Header.Get("X-Autorespond") != "" {
		r.Auto = true
	}
	switch strings.ToLower(strings.TrimSpace(m.Header.Get("Precedence"))) {
	case "auto_reply", "bulk", "junk", "list":
		r.Auto = true
	}
	ct := m.Header.Get("Content-Type")
	if ct == "" {
		ct = "text/plain"
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, fmt.Errorf("%w: content-type: %v", ErrMalformed, err)
	}
	if mt == "multipart/report" {
		switch strings.ToLower(params["report-type"]) {
		case "delivery-status", "global-delivery-status":
			r.Kind = KindDSN
			return r, r.readReport(m.Body, params["boundary"], parseDeliveryStatus)
		case "feedback-report":
			r.Kind = KindComplaint
			return r, r.readReport(m.Body, params["boundary"], parseFeedback)
		}
		r.Kind = KindOther
		return r, nil
	}
	if r.Auto {
		r.Kind = KindOther
	}
	var text, htmlText string
	var parts int
	if err := walkText(ct, m.Header.Get("Content-Transfer-Encoding"), m.Body, 0, &parts, &text, &htmlText); err != nil {
		return nil, err
	}
	if strings.TrimSpace(text) == "" && htmlText != "" {
		text = htmlToText(htmlText)
	}
	r.Text = ReplyText(text)
	return r, nil
}

// digest names a mail by its Message-ID, or by its content without one.
func digest(messageID string, raw []byte) string {
	sum := sha256.Sum256(raw)
	if id := strings.TrimSpace(messageID); id != "" {
		sum = sha256.Sum256([]byte(id))
	}
	return hex.EncodeToString(sum[:16])
}

// readReport finds the machine-readable part of a multipart/report (its
// second part by RFC 6522, found by type here) and reads it with parse.
func (r *Report) readReport(body io.Reader, boundary string, parse func(r *Report, part io.Reader) error) error {
	if boundary == "" {
		return fmt.Errorf("%w: multipart/report without a boundary", ErrMalformed)
	}
	mr := multipart.NewReader(body, boundary)
	for i := 0; i < maxParts; i++ {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: multipart: %v", ErrMalformed, err)
		}
		mt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		switch mt {
		case "message/delivery-status", "message/global-delivery-status", "message/feedback-report":
			return parse(r, decoded(p.Header.Get("Content-Transfer-Encoding"), p))
		}
	}
	return fmt.Errorf("%w: the report has no machine-readable part", ErrMalformed)
}

// fieldBlocks reads header-like blocks separated by blank lines, as a
// delivery-status body is made of (RFC 3464 §2.1).
func fieldBlocks(r io.Reader) ([]textproto.MIMEHeader, error) {
	tr := textproto.NewReader(bufio.NewReader(io.LimitReader(r, 1<<20)))
	var blocks []textproto.MIMEHeader
	for len(blocks) < maxParts {
		h, err := tr.ReadMIMEHeader()
		if len(h) > 0 {
			blocks = append(blocks, h)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return blocks, err
		}
	}
	return blocks, nil
}

var statusCode = regexp.MustCompile(`^([245])\.(\d{1,3})\.(\d{1,3})$`)

// parseDeliveryStatus reads the per-recipient fields of a DSN and keeps
// the most serious recipient's: failed over delayed over delivered over
// relayed and expanded over the others.
func parseDeliveryStatus(r *Report, body io.Reader) error {
	blocks, err := fieldBlocks(body)
	if err != nil && len(blocks) == 0 {
		return fmt.Errorf("%w: delivery-status: %v", ErrMalformed, err)
	}
	rank := map[string]int{"failed": 4, "delayed": 3, "delivered": 2, "relayed": 1, "expanded": 1}
	best := -1
	for _, b := range blocks {
		if b.Get("Final-Recipient") == "" && b.Get("Original-Recipient") == "" && b.Get("Action") == "" {
			continue // the per-message fields
		}
		status := strings.TrimSpace(b.Get("Status"))
		if i := strings.IndexAny(status, " \t("); i > 0 {
			status = status[:i] // "5.1.1 (bad destination mailbox address)"
		}
		if !statusCode.MatchString(status) {
			continue
		}
		action := strings.ToLower(strings.TrimSpace(b.Get("Action")))
		if n := rank[action]; n > best {
			best = n
			r.Action, r.Status = action, status
			r.Diagnostic = cleanDiagnostic(b.Get("Diagnostic-Code"))
		}
	}
	if best < 0 {
		return fmt.Errorf("%w: delivery-status has no recipient with a status", ErrMalformed)
	}
	switch r.Action {
	case "failed", "delayed", "delivered", "relayed", "expanded":
	default:
		r.Action = "" // unknown: the status class decides
	}
	return nil
}

// parseFeedback reads an ARF report's fields (RFC 5965 §3.1).
func parseFeedback(r *Report, body io.Reader) error {
	blocks, err := fieldBlocks(body)
	if len(blocks) == 0 {
		return fmt.Errorf("%w: feedback-report: %v", ErrMalformed, err)
	}
	ft := strings.ToLower(strings.TrimSpace(blocks[0].Get("Feedback-Type")))
	if ft == "" || len(ft) > 32 || strings.ContainsFunc(ft, func(c rune) bool { return !(c >= 'a' && c <= 'z' || c == '-' || c == '_') }) {
		return fmt.Errorf("%w: feedback-report without a Feedback-Type", ErrMalformed)
	}
	r.FeedbackType = ft
	if ft == "not-spam" {
		r.Kind = KindOther // the opposite of a complaint
	}
	return nil
}

var (
	anAddress = regexp.MustCompile(`[^\s<>()\[\]"';:,]+@[^\s<>()\[\]"';:,]+`)
	spaces    = regexp.MustCompile(`\s+`)
)

// cleanDiagnostic keeps the remote server's words without any address,
// on one line, clipped: "smtp; 550 5.1.1 <a@b>: no such user" → "smtp;
// 550 5.1.1 <address>: no such user".
func cleanDiagnostic(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = anAddress.ReplaceAllString(s, "address")
	s = strings.TrimSpace(spaces.ReplaceAllString(s, " "))
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if r := []rune(s); len(r) > maxDiagnostic {
		s = string(r[:maxDiagnostic]) + "…"
	}
	return s
}

// walkText finds the first text/plain and text/html parts of a mail,
// decoded to UTF-8, skipping attachments.
func walkText(contentType, cte string, body io.Reader, depth int, parts *int, text, htmlText *string) error {
	if depth > maxDepth {
		return fmt.Errorf("%w: multipart nesting too deep", ErrMalformed)
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return fmt.Errorf("%w: content-type: %v", ErrMalformed, err)
	}
	if strings.HasPrefix(mt, "multipart/") {
		if params["boundary"] == "" {
			return fmt.Errorf("%w: multipart without a boundary", ErrMalformed)
		}
		mr := multipart.NewReader(body, params["boundary"])
		for {
			*parts++
			if *parts > maxParts {
				return fmt.Errorf("%w: too many parts", ErrMalformed)
			}
			p, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%w: multipart: %v", ErrMalformed, err)
			}
			if disp, _, _ := mime.ParseMediaType(p.Header.Get("Content-Disposition")); disp == "attachment" {
				continue
			}
			pct := p.Header.Get("Content-Type")
			if pct == "" {
				pct = "text/plain"
			}
			if err := walkText(pct, p.Header.Get("Content-Transfer-Encoding"), p, depth+1, parts, text, htmlText); err != nil {
				return err
			}
		}
	}
	if mt != "text/plain" && mt != "text/html" || mt == "text/plain" && *text != "" || mt == "text/html" && *htmlText != "" {
		return nil
	}
	var r io.Reader = decoded(cte, body)
	if cs := strings.ToLower(params["charset"]); cs != "" && cs != "utf-8" && cs != "us-ascii" {
		cr, err := charsetReader(cs, r)
		if err != nil {
			return nil // an unknown charset: the part is skipped, not the mail
		}
		r = cr
	}
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return fmt.Errorf("%w: %s body: %v", ErrMalformed, mt, err)
	}
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	if mt == "text/plain" {
		*text = s
	} else {
		*htmlText = s
	}
	return nil
}

// decoded undoes a part's transfer encoding.
func decoded(cte string, body io.Reader) io.Reader {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "quoted-printable":
		return quotedprintable.NewReader(body)
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, lineJoiner{body})
	}
	return body
}

// lineJoiner drops CR, LF and spaces so base64 with line breaks decodes.
type lineJoiner struct{ r io.Reader }

func (l lineJoiner) Read(p []byte) (int, error) {
	for {
		n, err := l.r.Read(p)
		j := 0
		for _, b := range p[:n] {
			if b != '\r' && b != '\n' && b != ' ' && b != '\t' {
				p[j] = b
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}

// charsetReader decodes a named charset (GB2312, GBK, Big5, ISO-8859-1…)
// to UTF-8.
func charsetReader(charset string, r io.Reader) (io.Reader, error) {
	enc, err := htmlindex.Get(charset)
	if err != nil {
		return nil, err
	}
	return enc.NewDecoder().Reader(r), nil
}

var (
	htmlDropped  = regexp.MustCompile(`(?is)<(style|script|head|title)\b.*?</\s*(style|script|head|title)\s*>|<blockquote\b.*?</\s*blockquote\s*>|<!--.*?-->`)
	htmlQuoteDiv = regexp.MustCompile(`(?is)<div[^>]*class="?[^">]*(gmail_quote|moz-cite-prefix|yahoo_quoted|OutlookMessageHeader)[^>]*>.*`)
	htmlBreaks   = regexp.MustCompile(`(?i)<br\s*/?>|</(p|div|li|tr|h[1-6])\s*>`)
	htmlTags     = regexp.MustCompile(`(?s)<[^>]*>`)
)

// htmlToText makes plain text of an HTML-only reply: quoted blocks and
// what follows a mail client's quote marker are dropped.
func htmlToText(s string) string {
	s = htmlDropped.ReplaceAllString(s, "")
	s = htmlQuoteDiv.ReplaceAllString(s, "")
	s = htmlBreaks.ReplaceAllString(s, "\n")
	s = htmlTags.ReplaceAllString(s, "")
	return html.UnescapeString(s)
}

// Lines that begin what follows a reply's new text: the quoted message's
// attribution or header, a forward's, and a signature.
var (
	attribution = []*regexp.Regexp{
		regexp.MustCompile(`(?i)^on\b.{0,300}\bwrote:?$`),
		regexp.MustCompile(`(?i)^le\b.{0,300}\ba écrit ?:?$`),
		regexp.MustCompile(`(?i)^am\b.{0,300}\bschrieb.{0,60}:?$`),
		regexp.MustCompile(`(?i)^el\b.{0,300}\bescribió:?$`),
		regexp.MustCompile(`^.{0,300}(写道|寫道)[:：]?$`),
	}
	separators = []*regexp.Regexp{
		regexp.MustCompile(`(?i)^-{2,}\s*(original message|forwarded message|原始邮件|原始郵件)\s*-{2,}$`),
		regexp.MustCompile(`^_{10,}$`),
		regexp.MustCompile(`(?i)^(from|发件人|寄件者)\s*[:：].{1,300}$`),
		regexp.MustCompile(`^-- ?$`),
		regexp.MustCompile(`(?i)^(sent from my|sent from mail for|get outlook for|发自我的|從我的).{0,60}$`),
	}
)

// ReplyText takes the new text of a reply: the lines above the quoted
// message ("On … wrote:", "> …", "-----Original Message-----", an
// Outlook "From:" header, 写道：) and above the signature ("-- ", "Sent
// from my phone"), trimmed and clipped.
func ReplyText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	lines := strings.Split(s, "\n")
	end := len(lines)
cut:
	for i, line := range lines {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, ">") {
			end = i
			break
		}
		// An attribution may be wrapped over two or three lines.
		joined := t
		for j := 1; j < 3 && i+j < len(lines); j++ {
			joined += " " + strings.TrimSpace(lines[i+j])
			for _, re := range attribution {
				if re.MatchString(joined) && !re.MatchString(t) && strings.TrimSpace(lines[i+j]) != "" {
					end = i
					break cut
				}
			}
		}
		for _, re := range attribution {
			if re.MatchString(t) {
				end = i
				break cut
			}
		}
		for _, re := range separators {
			if re.MatchString(t) {
				end = i
				break cut
			}
		}
	}
	out := strings.TrimSpace(strings.Join(lines[:end], "\n"))
	out = strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\n' && r != '\t' || r == 0x7f {
			return -1
		}
		return r
	}, out)
	if utf8.RuneCountInString(out) > maxReplyText {
		out = string([]rune(out)[:maxReplyText]) + "…"
	}
	return out
}
