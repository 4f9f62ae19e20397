package ops

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"unicode"

	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"
)

// sharedRedis hands asynqmon the gateway's own Redis client (whatever
// its kind: one server, Sentinel, Cluster) instead of a connection of its
// own. The handler is never closed: the gateway closes its client.
type sharedRedis struct{ c redis.UniversalClient }

func (s sharedRedis) MakeRedisClient() any { return s.c }

// queueDashboard is asynqmon under DashboardPath, payloads and results
// hidden, read-only unless asked, its pages kept from loading anything
// from outside the listener.
func queueDashboard(rdb redis.UniversalClient, readOnly bool) http.Handler {
	mon := asynqmon.New(asynqmon.Options{
		RootPath:         DashboardPath,
		RedisConnOpt:     sharedRedis{rdb},
		PayloadFormatter: asynqmon.PayloadFormatterFunc(Payload),
		ResultFormatter:  asynqmon.ResultFormatterFunc(Payload),
		ReadOnly:         readOnly,
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if readOnly && r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "the queue dashboard is read-only (GATEWAY_OPS_READ_ONLY)", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "+
			"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		buf := &bufferedResponse{header: http.Header{}}
		mon.ServeHTTP(buf, r)
		body := buf.body.Bytes()
		ct := buf.header.Get("Content-Type")
		if ct == "" {
			ct = http.DetectContentType(body) // as net/http would (the index page sets none)
			buf.header.Set("Content-Type", ct)
		}
		switch {
		case strings.HasPrefix(ct, "text/html"):
			body = outsideStylesheet.ReplaceAll(body, nil)
		case strings.HasPrefix(r.URL.Path, DashboardPath+"/api/") && strings.HasPrefix(ct, "application/json"):
			body = scrubErrors(body)
		}
		for k, v := range buf.header {
			h[k] = v
		}
		h.Del("Content-Length")
		status := buf.status
		if status == 0 {
			status = http.StatusOK
		}
		w.WriteHeader(status)
		_, _ = w.Write(body)
	})
}

// outsideStylesheet is a <link> to a stylesheet on another host (the UI's
// page asks Google Fonts for Roboto and Material Icons; the UI draws its
// icons as SVG and falls back to the system's sans-serif font).
var outsideStylesheet = regexp.MustCompile(`<link rel="stylesheet" href="https?://[^"]*"\s*/?>`)

// bufferedResponse keeps asynqmon's answer so it can be filtered.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }
func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}
func (b *bufferedResponse) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

// idValue is an id the gateway makes: a ULID, maybe prefixed (bc_) and
// followed by an index ("bc_01H…:17").
var idValue = regexp.MustCompile(`^(?:[a-z]{1,4}_)?[0-9A-HJKMNP-TV-Z]{26}(?::[0-9]{1,9})?$`)

// Payload is what the dashboard shows of a task's payload (and result):
// the task's type, the payload's size and the ids in it (the string
// values of its top-level fields that are ids the gateway made), never
// anything else: payloads hold phone numbers, addresses and message text.
func Payload(taskType string, payload []byte) string {
	out := struct {
		Type    string            `json:"type"`
		Payload string            `json:"payload"`
		IDs     map[string]string `json:"ids,omitempty"`
	}{Type: taskType, Payload: fmt.Sprintf("hidden (%d bytes)", len(payload))}
	var fields map[string]json.RawMessage
	if json.Unmarshal(payload, &fields) == nil {
		for k, raw := range fields {
			var v string
			// A ULID has letters: a run of digits is never taken for one.
			if len(k) <= 32 && json.Unmarshal(raw, &v) == nil && idValue.MatchString(v) && strings.IndexFunc(v, unicode.IsLetter) >= 0 {
				if out.IDs == nil {
					out.IDs = map[string]string{}
				}
				out.IDs[k] = v
			}
		}
	}
	b, _ := json.Marshal(out)
	return string(b)
}

var (
	numberLike = regexp.MustCompile(`\+?\d[\d\s().-]{5,}\d`)
	emailLike  = regexp.MustCompile(`[^\s@"<>(),;:]+@[^\s@"<>(),;:]+`)
)

// scrubErrors masks number runs and email addresses in the error messages
// of an API answer: a task's last error should name only ids and codes,
// and this holds when one does not.
func scrubErrors(body []byte) []byte {
	var doc any
	if json.Unmarshal(body, &doc) != nil {
		return body
	}
	var walk func(v any) any
	walk = func(v any) any {
		switch t := v.(type) {
		case map[string]any:
			for k, x := range t {
				if s, ok := x.(string); ok && k == "error_message" {
					t[k] = emailLike.ReplaceAllString(numberLike.ReplaceAllString(s, "[number]"), "[email]")
				} else {
					t[k] = walk(x)
				}
			}
		case []any:
			for i, x := range t {
				t[i] = walk(x)
			}
		}
		return v
	}
	out, err := json.Marshal(walk(doc))
	if err != nil {
		return body
	}
	return out
}
