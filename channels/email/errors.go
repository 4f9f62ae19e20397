package email

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	mail "github.com/wneessen/go-mail"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/redact"
)

// Gateway error codes for failures that carry no SMTP reply code. Failures
// that do carry one are coded "smtp_" + the code ("smtp_550").
const (
	CodeNoRecipient      = "no_recipient"      // the message has no email address
	CodeInvalidRecipient = "invalid_recipient" // the address does not parse (net/mail)
	CodeEmptyBody        = "empty_body"        // neither text nor HTML
	CodeTimeout          = "timeout"           // no answer in time (or the context expired)
	CodeCanceled         = "canceled"          // the context was cancelled (shutdown)
	CodeConnect          = "connect"           // the TCP connection failed (refused, unreachable)
	CodeConnectionLost   = "connection_lost"   // the server hung up mid-session
	CodeTLS              = "tls_handshake"     // TLS failed (untrusted certificate, protocol)
	CodeAuthUnsupported  = "auth_unsupported"  // credentials set, no usable AUTH mechanism offered
	CodeNotLoopback      = "not_loopback"      // smtp+insecure:// resolved to a non-loopback address
	CodeSetup            = "smtp_setup"        // the session could not be set up (e.g. no STARTTLS offered)
	CodeClosed           = "closed"            // the channel was closed
)

// stage is where in the SMTP exchange a failure happened.
type stage int

const (
	stageSession   stage = iota + 1 // greeting, EHLO, STARTTLS, AUTH
	stageSender                     // MAIL FROM
	stageRecipient                  // RCPT TO
	stageContent                    // DATA and the reply to the content
	stageOther
)

// replyClass is the one table from SMTP reply codes to what the gateway
// does. loud marks faults of the gateway's configuration or of the
// server, which an operator must fix: they are retried (the messages are
// not at fault and must not be lost) and logged at error level.
//
//	4xx anywhere (421 closing, 450/451 try later, 452 storage)   retryable
//	530, 534, 535, 538 (authentication)                         retryable, loud
//	5xx to RCPT TO (550, 551, 553, 501...) or to DATA/content   permanent
//	5xx to the greeting, EHLO or MAIL FROM (our sender)         retryable, loud
func replyClass(code int, st stage) (cls channels.Class, loud bool) {
	switch {
	case code >= 400 && code < 500:
		return channels.Retryable, false
	case code == 530 || code == 534 || code == 535 || code == 538:
		return channels.Retryable, true
	case code >= 500 && (st == stageRecipient || st == stageContent):
		return channels.Permanent, false
	default:
		return channels.Retryable, true
	}
}

// stageOf maps go-mail's SendError reason to the stage.
func stageOf(r mail.SendErrReason) stage {
	switch r {
	case mail.ErrConnCheck:
		return stageSession
	case mail.ErrSMTPMailFrom:
		return stageSender
	case mail.ErrSMTPRcptTo:
		return stageRecipient
	case mail.ErrSMTPData, mail.ErrWriteContent, mail.ErrSMTPDataClose:
		return stageContent
	}
	return stageOther
}

// outcome is what to do after a failed send.
type outcome struct {
	err *channels.SendError
	// loud asks for an error-level log (see replyClass).
	loud bool
	// keep: the connection is still in a clean state (after an RSET check).
	keep bool
	// redial: nothing of the message reached the server, so a pooled
	// connection that turned out dead may be replaced and the send tried
	// once more at once.
	redial bool
}

// classifySend turns go-mail's error for one message into the class.
// go-mail's *mail.SendError wraps no error (errors.As cannot reach the
// *textproto.Error), but exposes the reply code it parsed from it
// (ErrorCode, 0 when no reply came) and the stage (Reason); the first I/O
// error comes from the connection itself.
func classifySend(ctx context.Context, err error, c *conn, rcpt ...string) outcome {
	var se *mail.SendError
	if !errors.As(err, &se) {
		return outcome{err: &channels.SendError{Class: channels.Retryable, Code: CodeSetup,
			Message: scrub("sending failed: "+err.Error(), rcpt...), Err: err}, loud: true}
	}
	st := stageOf(se.Reason)
	msg := scrub(se.Error(), rcpt...)
	// Only the reply to the content can be lost in flight: the server may
	// have accepted the message when no reply came back.
	afterContent := se.Reason == mail.ErrSMTPDataClose
	beforeContent := se.Reason == mail.ErrConnCheck || se.Reason == mail.ErrSMTPMailFrom ||
		se.Reason == mail.ErrSMTPRcptTo || se.Reason == mail.ErrSMTPData

	if c.wasAborted() {
		return outcome{err: ctxError(ctx, afterContent, msg)}
	}
	if code := se.ErrorCode(); code >= 400 {
		cls, loud := replyClass(code, st)
		return outcome{
			err:  &channels.SendError{Class: cls, Code: "smtp_" + strconv.Itoa(code), Message: msg, Err: err},
			loud: loud,
			// 421: the server is closing the connection.
			keep:   code != 421,
			redial: code == 421 && beforeContent,
		}
	}
	switch se.Reason {
	case mail.ErrGetSender, mail.ErrGetRcpts, mail.ErrNoUnencoded:
		return outcome{err: &channels.SendError{Class: channels.Permanent, Code: "invalid_message", Message: msg, Err: err}}
	}
	// No reply: the connection failed.
	ioErr := c.ioErr()
	if isTimeout(ioErr) {
		return outcome{err: &channels.SendError{Class: channels.Retryable, Code: CodeTimeout, Unconfirmed: afterContent,
			Message: "no answer from the SMTP server in time: " + msg, Err: err}}
	}
	return outcome{
		err: &channels.SendError{Class: channels.Retryable, Code: CodeConnectionLost, Unconfirmed: afterContent,
			Message: "the SMTP connection failed: " + msg, Err: err},
		redial: beforeContent,
	}
}

// classifyDial turns a failure to open an SMTP session into the class.
// Connection setup failures are never the message's fault: all retryable.
func classifyDial(ctx context.Context, err error, c *conn) *channels.SendError {
	if c != nil && c.wasAborted() || ctx.Err() != nil {
		return ctxError(ctx, false, "connecting to the SMTP server")
	}
	detail := scrub(err.Error())
	var tpe *textproto.Error
	if errors.As(err, &tpe) {
		cls, _ := replyClass(tpe.Code, stageSession)
		return &channels.SendError{Class: cls, Code: "smtp_" + strconv.Itoa(tpe.Code),
			Message: "the SMTP server refused the session: " + detail, Err: err}
	}
	retry := func(code, what string) *channels.SendError {
		return &channels.SendError{Class: channels.Retryable, Code: code, Message: what + ": " + detail, Err: err}
	}
	switch {
	case errors.Is(err, errNoAuthMechanism):
		return retry(CodeAuthUnsupported, "SMTP authentication impossible")
	case errors.Is(err, errNotLoopback):
		return retry(CodeNotLoopback, "refused to connect")
	case isTLSError(err):
		return retry(CodeTLS, "TLS with the SMTP server failed")
	case isTimeout(err) || c != nil && isTimeout(c.ioErr()):
		return retry(CodeTimeout, "no answer from the SMTP server in time")
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return retry(CodeConnect, "could not connect to the SMTP server")
	}
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed) {
		return retry(CodeConnectionLost, "the SMTP server hung up")
	}
	// Notably go-mail's refusal to go on without STARTTLS on smtp://.
	return retry(CodeSetup, "could not set up the SMTP session")
}

// loudSetup tells whether a failure to get a connection is an operator's
// problem (configuration, credentials, certificates, a server refusing
// us) rather than a passing network fault.
func loudSetup(se *channels.SendError) bool {
	switch se.Code {
	case CodeAuthUnsupported, CodeNotLoopback, CodeTLS, CodeSetup:
		return true
	}
	if n, ok := strings.CutPrefix(se.Code, "smtp_"); ok {
		code, err := strconv.Atoi(n)
		_, loud := replyClass(code, stageSession)
		return err == nil && loud
	}
	return false
}

// ctxError is the error for a send abandoned because ctx ended.
// afterContent: the message content was sent, the server's answer not read.
func ctxError(ctx context.Context, afterContent bool, detail string) *channels.SendError {
	se := &channels.SendError{Class: channels.Retryable, Code: CodeCanceled, Unconfirmed: afterContent, Err: ctx.Err(),
		Message: "the send was interrupted (shutdown): " + detail}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		se.Code = CodeTimeout
		se.Message = "the send ran out of time: " + detail
	}
	return se
}

func isTimeout(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

func isTLSError(err error) bool {
	var (
		cve  *tls.CertificateVerificationError
		rhe  tls.RecordHeaderError
		ae   tls.AlertError
		uae  x509.UnknownAuthorityError
		he   x509.HostnameError
		cie  x509.CertificateInvalidError
		echo *tls.ECHRejectionError
	)
	return errors.As(err, &cve) || errors.As(err, &rhe) || errors.As(err, &ae) || errors.As(err, &uae) ||
		errors.As(err, &he) || errors.As(err, &cie) || errors.As(err, &echo)
}

// addrLike finds anything shaped like an email address in server replies
// and go-mail's error text (which lists the affected recipients).
var addrLike = regexp.MustCompile(`[^\s<>()\[\]{}"',;:]+@[^\s<>()\[\]{}"',;:]+`)

// maxMessage caps the stored explanation.
const maxMessage = 400

// scrub makes error text safe to store and log: the recipient (in each
// form given: go-mail writes it quoted where needed) and anything else
// address-like is masked with redact.Email, and the text is capped.
func scrub(s string, rcpt ...string) string {
	for _, form := range rcpt {
		s = replaceFold(s, form, redact.Email(form))
	}
	s = addrLike.ReplaceAllStringFunc(s, redact.Email)
	if len(s) > maxMessage {
		cut := maxMessage
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// replaceFold replaces every case-insensitive occurrence of old.
func replaceFold(s, old, repl string) string {
	if old == "" {
		return s
	}
	lower, lowerOld := strings.ToLower(s), strings.ToLower(old)
	if len(lower) != len(s) || len(lowerOld) != len(old) {
		// Case mapping changed byte lengths: fall back to exact matches.
		return strings.ReplaceAll(s, old, repl)
	}
	var b strings.Builder
	for {
		i := strings.Index(lower, lowerOld)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		b.WriteString(repl)
		s, lower = s[i+len(old):], lower[i+len(old):]
	}
}
