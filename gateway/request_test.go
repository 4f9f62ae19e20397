package gateway

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/workers"
)

var now = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// DecodeMessage decodes and validates a POST /v1/messages body as the API
// does before a template is expanded: the JSON decoder, then the messaging
// package's checks, answered as problems.
func DecodeMessage(body []byte, channels []string, now time.Time) (*messaging.Valid, *Problem) {
	d, p := parseDraft(body)
	if p != nil {
		return nil, p
	}
	v, err := d.Validate(channels, now)
	var invalid *messaging.InvalidError
	if errors.As(err, &invalid) {
		return nil, validationProblem(invalid.Errors)
	}
	return v, nil
}

func TestDecodeMessageNormalises(t *testing.T) {
	v, p := DecodeMessage([]byte(`{"channel":"sms","to":{"phone":" +44 7911 123456 "},"body":"数据","send_at":"2026-11-23T10:00:00+08:00","metadata":{"ward": 7}}`), []string{"sms"}, now)
	if p != nil {
		t.Fatalf("problem %+v", p)
	}
	if v.To.Phone != "+447911123456" {
		t.Fatalf("phone not normalised to E.164: %q", v.To.Phone)
	}
	if v.Priority != workers.PriorityNormal {
		t.Fatalf("default priority %q", v.Priority)
	}
	if v.SendAt == nil || !v.SendAt.Equal(time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)) {
		t.Fatalf("send_at %v", v.SendAt)
	}
	if v.Encoding != "UCS-2" || v.Units != 1 {
		t.Fatalf("segments %d %s", v.Units, v.Encoding)
	}
	if string(v.Metadata) != `{"ward": 7}` {
		t.Fatalf("metadata must be kept as given: %s", v.Metadata)
	}
	v, _ = DecodeMessage([]byte(`{"channel":"sms","to":{"phone":"+14155550100"},"body":"x","send_at":"2026-11-22T09:58:00Z"}`), []string{"sms"}, now)
	if v == nil || v.SendAt != nil {
		t.Fatalf("a send_at within the clock-skew tolerance means now: %+v", v)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add([]byte(`{"channel":"sms","to":{"phone":"+14155550100"},"body":"hi","priority":"crisis","send_at":"2026-11-23T10:00:00Z","metadata":{"a":1},"callback_url":"https://x.test/h"}`))
	f.Add([]byte(`{"channel":"sms","to":{"phone":"+8613800138000"},"body":"您好"}`))
	f.Add([]byte(`{"to":null,"body":null,"metadata":null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte("{\"body\":\"\xff\"}"))
	f.Add([]byte(`{"channel":"sms","to":{"phone":"+1` + strings.Repeat("9", 40) + `"},"body":"x"}`))
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	_, _ = w.Write([]byte(`{"channel":"sms","to":{"phone":"+14155550100"},"body":"hi"}`))
	_ = w.Close()
	f.Add(gz.Bytes())
	// Bodies arrive as a client sent them: raw, or gzip (and deflate or br)
	// when the bytes say so, inflated as the API inflates them.
	f.Fuzz(func(t *testing.T, body []byte) {
		if bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
			inflated, p := inflate("gzip", body, 64<<10)
			if p != nil {
				return
			}
			body = inflated
		}
		v, p := DecodeMessage(body, []string{"sms"}, now)
		if (v == nil) == (p == nil) {
			t.Fatalf("want exactly one of a message or a problem: %+v %+v", v, p)
		}
		if p != nil {
			if p.Status < 400 || p.Status > 499 || p.Detail == "" {
				t.Fatalf("problem %+v", p)
			}
			return
		}
		if v.Channel != "sms" || !strings.HasPrefix(v.To.Phone, "+") || v.Body == "" || utf8.RuneCountInString(v.Body) > 1600 {
			t.Fatalf("accepted an invalid message: %+v", v)
		}
		if len(v.Metadata) > messaging.MaxMetadataBytes {
			t.Fatalf("metadata too large accepted")
		}
	})
}

func TestEachChannelNeedsItsOwnRecipientAndFields(t *testing.T) {
	all := []string{"email", "sms", "voice", "wechat"}
	cases := []struct {
		name, body string
		field      string // the field the problem must name; "" means accepted
	}{
		{"a WeChat message without openid", `{"channel":"wechat","to":{},"body":"x"}`, "to.wechat_openid"},
		{"a WeChat message to a phone", `{"channel":"wechat","to":{"phone":"+14155550100","wechat_openid":"oABC"},"body":"x"}`, "to.phone"},
		{"a malformed openid", `{"channel":"wechat","to":{"wechat_openid":"o ABC!"},"body":"x"}`, "to.wechat_openid"},
		{"a WeChat template without template_id", `{"channel":"wechat","to":{"wechat_openid":"oABC"},"wechat":{"kind":"template"}}`, "wechat.template_id"},
		{"an unknown WeChat kind", `{"channel":"wechat","to":{"wechat_openid":"oABC"},"body":"x","wechat":{"kind":"news"}}`, "wechat.kind"},
		{"a subscribe message without its template", `{"channel":"wechat","to":{"wechat_openid":"oABC"},"wechat":{"kind":"subscribe"}}`, "wechat.subscribe.template_id"},
		{"a subscribe message with a template message's fields", `{"channel":"wechat","to":{"wechat_openid":"oABC"},"wechat":{"kind":"subscribe","template_id":"T1","subscribe":{"template_id":"S1"}}}`, "wechat"},
		{"a subscribe page that is not a URL", `{"channel":"wechat","to":{"wechat_openid":"oABC"},"body":"x","wechat":{"subscribe":{"template_id":"S1","page":"javascript:alert(1)"}}}`, "wechat.subscribe.page"},
		{"a customer-service message with a subscribe message", `{"channel":"wechat","to":{"wechat_openid":"oABC"},"body":"x","wechat":{"kind":"custom","subscribe":{"template_id":"S1"}}}`, "wechat"},
		{"a complete auto message with both templates", `{"channel":"wechat","to":{"wechat_openid":"oABC"},"body":"x","wechat":{"template_id":"T1","subscribe":{"template_id":"S1","data":{"thing1":"复诊"},"page":"https://clinic.example/f/1"}}}`, ""},
		{"a WeChat template needs no body", `{"channel":"wechat","to":{"wechat_openid":"oABC"},"wechat":{"kind":"template","template_id":"T1","data":{"name":"王"}}}`, ""},
		{"an invalid email address", `{"channel":"email","to":{"email":"not-an-address"},"subject":"s","body":"x"}`, "to.email"},
		{"an email address with a display name", `{"channel":"email","to":{"email":"Jane <jane@example.org>"},"subject":"s","body":"x"}`, "to.email"},
		{"an email without subject", `{"channel":"email","to":{"email":"jane@example.org"},"body":"x"}`, "subject"},
		{"a two-line subject", `{"channel":"email","to":{"email":"jane@example.org"},"subject":"a\nBcc: x@y.z","body":"x"}`, "subject"},
		{"a subject on an SMS", `{"channel":"sms","to":{"phone":"+14155550100"},"subject":"s","body":"x"}`, "subject"},
		{"a voice call without phone", `{"channel":"voice","to":{"email":"jane@example.org"},"body":"x"}`, "to.phone"},
		{"a keypad question on an SMS", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"x","gather":{"prompt":"p","digits":"12"}}`, "gather"},
		{"a keypad question without keys", `{"channel":"voice","to":{"phone":"+14155550100"},"body":"x","gather":{"prompt":"p","digits":""}}`, "gather.digits"},
		{"a keypad question with letters", `{"channel":"voice","to":{"phone":"+14155550100"},"body":"x","gather":{"prompt":"p","digits":"1a"}}`, "gather.digits"},
		{"a recording too long", `{"channel":"voice","to":{"phone":"+14155550100"},"body":"x","record":{"prompt":"p","max_length":3600}}`, "record.max_length"},
		{"a recording without prompt", `{"channel":"voice","to":{"phone":"+14155550100"},"body":"x","record":{"max_length":30}}`, "record.prompt"},
		{"a bad locale", `{"channel":"voice","to":{"phone":"+14155550100"},"body":"x","locale":"not a locale"}`, "locale"},
		{"a complete follow-up call", `{"channel":"voice","to":{"phone":"+8613800138000"},"body":"您好","locale":"zh-CN","gather":{"prompt":"按1","digits":"123"},"record":{"prompt":"请说"}}`, ""},
		{"a complete email", `{"channel":"email","to":{"email":"Jane@Example.ORG"},"subject":"检查结果","body":"x","html":"<p>x</p>"}`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, p := DecodeMessage([]byte(c.body), all, now)
			if c.field == "" {
				if p != nil {
					t.Fatalf("refused: %+v", p)
				}
				return
			}
			if p == nil {
				t.Fatalf("accepted %+v", v)
			}
			if p.Status != 422 || !strings.Contains(p.Detail+fmt.Sprint(p.Errors), c.field) {
				t.Fatalf("problem %d %q %v does not name %s", p.Status, p.Detail, p.Errors, c.field)
			}
		})
	}
	v, _ := DecodeMessage([]byte(`{"channel":"email","to":{"email":"Jane@Example.ORG"},"subject":"s","body":"x"}`), all, now)
	if v.To.Email != "Jane@example.org" {
		t.Fatalf("the domain is case-insensitive and lower-cased, the local part kept: %q", v.To.Email)
	}
	v, _ = DecodeMessage([]byte(`{"channel":"voice","to":{"phone":"+14155550100"},"body":"x","gather":{"prompt":"p","digits":"12"},"record":{"prompt":"r"}}`), all, now)
	if v.Voice.Gather.Timeout != 5 || v.Voice.Record.MaxLength != 60 {
		t.Fatalf("voice defaults %+v %+v", v.Voice.Gather, v.Voice.Record)
	}
}

// FuzzInflate feeds the body inflater every coding header and body: it
// never yields more than the limit, and refuses with a 4xx problem.
func FuzzInflate(f *testing.F) {
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	_, _ = w.Write(bytes.Repeat([]byte("a"), 10000))
	_ = w.Close()
	f.Add("gzip", gz.Bytes())
	f.Add("gzip, gzip", gz.Bytes())
	f.Add("deflate", []byte{0x78, 0x9c, 0x4b, 0x04, 0x00, 0x00, 0x62, 0x00, 0x62})
	f.Add("br", []byte{0x0b, 0x02, 0x80, 0x68, 0x69, 0x03})
	f.Add("br", []byte{0x11})
	f.Add("identity", []byte("{}"))
	f.Add("x-gzip,identity", gz.Bytes())
	f.Add("compress", []byte{0x1f, 0x9d})
	f.Fuzz(func(t *testing.T, coding string, body []byte) {
		const limit = 4096
		out, p := inflate(coding, body, limit)
		if p != nil {
			if p.Status < 400 || p.Status > 499 || p.Detail == "" {
				t.Fatalf("problem %+v", p)
			}
			if out != nil {
				t.Fatalf("a body and a problem")
			}
			return
		}
		if len(out) > limit {
			t.Fatalf("inflated %d bytes past the %d limit", len(out), limit)
		}
	})
}
