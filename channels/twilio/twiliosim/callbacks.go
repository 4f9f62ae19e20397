package twiliosim

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Sign returns the X-Twilio-Signature Twilio sends with a POST to fullURL
// carrying params: base64(HMAC-SHA1(authToken, fullURL followed by every
// parameter name immediately followed by its value, names sorted)).
// Repeated parameters contribute each distinct value, sorted, as Twilio's
// helper libraries do.
func Sign(authToken, fullURL string, params url.Values) string {
	names := make([]string, 0, len(params))
	for name := range params {
		names = append(names, name)
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteString(fullURL)
	for _, name := range names {
		values := params[name]
		if len(values) > 1 {
			values = slices.Compact(slices.Sorted(slices.Values(values)))
		}
		for _, v := range values {
			b.WriteString(name)
			b.WriteString(v)
		}
	}
	mac := hmac.New(sha1.New, []byte(authToken))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// SendInbound posts a signed incoming-message webhook to webhookURL, as
// Twilio does when someone texts body from the number from to the number
// to, and returns the HTTP status the receiver answered. webhookURL must
// be a loopback URL.
func (s *Server) SendInbound(ctx context.Context, webhookURL, from, to, body string) (int, error) {
	if err := checkCallbackURL(webhookURL); err != nil {
		return 0, err
	}
	sid := "SM" + randHex(16)
	form := url.Values{
		"AccountSid":    {s.accountSID},
		"ApiVersion":    {APIVersion},
		"Body":          {body},
		"From":          {from},
		"MessageSid":    {sid},
		"NumMedia":      {"0"},
		"NumSegments":   {strconv.Itoa(Segments(body))},
		"SmsMessageSid": {sid},
		"SmsSid":        {sid},
		"SmsStatus":     {"received"},
		"To":            {to},
	}
	code, err := s.post(ctx, webhookURL, form)
	s.log.Debug("twiliosim: inbound message posted", "sid", sid, "http_status", code, "err", err)
	return code, err
}

// scheduleCallbacks starts the goroutine posting m's status callbacks,
// unless the simulator is closed.
func (s *Server) scheduleCallbacks(m outbound) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.pending++
	if s.pending == 1 {
		s.idle = make(chan struct{})
	}
	s.cbWG.Add(1)
	s.mu.Unlock()
	go s.runCallbacks(m)
}

// runCallbacks posts "sent" then the final status, pausing before each,
// and stops early when the simulator closes.
func (s *Server) runCallbacks(m outbound) {
	defer s.callbackDone()
	statuses := []string{StatusSent}
	if m.final != StatusSent {
		statuses = append(statuses, m.final)
	}
	for _, status := range statuses {
		if !sleepCtx(s.cbCtx, s.cbDelay) {
			return
		}
		s.mu.Lock()
		retries, wait := s.retries, s.retryWait
		s.mu.Unlock()
		for try := 0; !s.postCallback(m, status) && try < retries; try++ {
			if !sleepCtx(s.cbCtx, wait) {
				return
			}
		}
	}
}

// callbackDone marks one callback goroutine finished.
func (s *Server) callbackDone() {
	s.mu.Lock()
	s.pending--
	if s.pending == 0 {
		close(s.idle)
	}
	s.mu.Unlock()
	s.cbWG.Done()
}

// postCallback attempts one status callback and records the outcome. It
// reports whether the receiver took it: false for a 5xx answer or none
// (a retry may help), true otherwise.
func (s *Server) postCallback(m outbound, status string) bool {
	form := url.Values{
		"AccountSid":    {s.accountSID},
		"ApiVersion":    {APIVersion},
		"From":          {m.from},
		"MessageSid":    {m.sid},
		"MessageStatus": {status},
		"SmsSid":        {m.sid},
		"SmsStatus":     {status},
		"To":            {m.to},
	}
	if m.mss != "" {
		form.Set("MessagingServiceSid", m.mss)
	}
	cb := Callback{MessageSID: m.sid, URL: m.callbackURL, Status: status}
	if status == StatusUndelivered || status == StatusFailed {
		cb.ErrorCode = m.finalCode
		form.Set("ErrorCode", strconv.Itoa(m.finalCode))
	}
	var err error
	if err = checkCallbackURL(m.callbackURL); err == nil {
		cb.Code, err = s.post(s.cbCtx, m.callbackURL, form)
	}
	if err != nil {
		cb.Err = err.Error()
	}
	cb.At = time.Now()

	s.mu.Lock()
	s.stats.Callbacks++
	if cb.Err != "" || cb.Code < 200 || cb.Code > 299 {
		s.stats.CallbackErrors++
	}
	if !s.noRecord {
		s.callbacks = append(s.callbacks, cb)
	}
	s.mu.Unlock()
	s.log.Debug("twiliosim: status callback", "sid", m.sid, "status", status,
		"http_status", cb.Code, "err", cb.Err)
	return cb.Err == "" && cb.Code < 500
}

// post sends a signed form POST through the loopback-only client and
// returns the answer's status code.
func (s *Server) post(ctx context.Context, target string, form url.Values) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, errors.New("twiliosim: invalid callback URL")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "TwilioProxy/1.1")
	req.Header.Set("I-Twilio-Idempotency-Token", randHex(16))
	req.Header.Set("X-Twilio-Signature", Sign(s.authToken, target, form))
	resp, err := s.cbClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // drop the URL, which may carry identifiers
		}
		return 0, fmt.Errorf("twiliosim: callback: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// checkCallbackURL refuses URLs that are not http(s) to a loopback host.
func checkCallbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("twiliosim: invalid callback URL")
	}
	if !isLoopbackHost(u.Hostname()) {
		return errNonLoopback
	}
	return nil
}

// sleepCtx waits d, returning false if ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
