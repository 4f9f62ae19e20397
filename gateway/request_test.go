package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/workers"
)

var now = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

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
	if v.SMS.Encoding != "UCS-2" || v.SMS.Segments != 1 {
		t.Fatalf("segments %+v", v.SMS)
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
	f.Fuzz(func(t *testing.T, body []byte) {
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
		if v.Channel != "sms" || !strings.HasPrefix(v.To.Phone, "+") || v.Body == "" || v.SMS.Chars > 1600 {
			t.Fatalf("accepted an invalid message: %+v", v)
		}
		if len(v.Metadata) > MaxMetadataBytes {
			t.Fatalf("metadata too large accepted")
		}
	})
}
