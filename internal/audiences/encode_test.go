package audiences

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestEncodeChunkIsJSON(t *testing.T) {
	rs := []Recipient{
		{Phone: "+8613800138000"},
		{},
		{Email: `a"b\c@example.org`, WeChatOpenID: "o_1", Locale: "zh-Hant-TW", TimeZone: "Asia/Taipei", ExternalID: "張 <&> \u2028 \x01\t\r\n é"},
	}
	enc := encodeChunk(rs)
	std, err := json.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	var a, b []Recipient
	if err := json.Unmarshal(enc, &a); err != nil {
		t.Fatalf("%s: %v", enc, err)
	}
	if err := json.Unmarshal(std, &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, rs) || !reflect.DeepEqual(a, b) {
		t.Fatalf("decoded %+v, want %+v", a, rs)
	}
	if !strings.HasPrefix(string(enc), `[{"phone":"+8613800138000"},{},{"email":"a\"b\\c@example.org","wechat_openid"`) {
		t.Fatalf("encoding %s", enc)
	}
}

func FuzzEncodeChunk(f *testing.F) {
	f.Add("+8613800138000", "a@example.org", "\x00\"\\\xff\u2028")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		rs := []Recipient{{Phone: a, Email: b, WeChatOpenID: c, Locale: a, TimeZone: b, ExternalID: c}}
		std, _ := json.Marshal(rs)
		var want, got []Recipient
		if err := json.Unmarshal(std, &want); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(encodeChunk(rs), &got); err != nil {
			t.Fatalf("%q: %v", encodeChunk(rs), err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
}
