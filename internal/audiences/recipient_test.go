package audiences

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/internal/consent"
)

func TestValidateRecipientNormalises(t *testing.T) {
	r := Recipient{
		Phone:        " +86 138-0013-8000 ",
		Email:        " Ann.Lee@Example.ORG ",
		WeChatOpenID: " oAbC-12_x ",
		Locale:       "zh_cn",
		TimeZone:     " Asia/Shanghai ",
		ExternalID:   " MRN 42 ",
	}
	if err := ValidateRecipient(&r, ""); err != nil {
		t.Fatalf("ValidateRecipient: %v", err)
	}
	want := Recipient{
		Phone: "+8613800138000", Email: "Ann.Lee@example.org", WeChatOpenID: "oAbC-12_x",
		Locale: "zh-CN", TimeZone: "Asia/Shanghai", ExternalID: "MRN 42",
	}
	if r != want {
		t.Fatalf("normalised to %+v, want %+v", r, want)
	}
	again := r
	if err := ValidateRecipient(&again, ""); err != nil || again != r {
		t.Fatalf("second normalisation: %+v, %v; want %+v unchanged", again, err, r)
	}
	ids := r.Identities()
	wantIDs := []consent.Identity{
		{Kind: consent.Phone, Value: "+8613800138000"},
		{Kind: consent.Email, Value: "Ann.Lee@example.org"},
		{Kind: consent.WeChat, Value: "oAbC-12_x"},
	}
	if !reflect.DeepEqual(ids, wantIDs) {
		t.Fatalf("Identities() = %v, want %v", ids, wantIDs)
	}
}

func TestValidateRecipientDefaultRegion(t *testing.T) {
	for _, tc := range []struct {
		phone, region, want, reason string
	}{
		{"13800138000", "CN", "+8613800138000", ""},
		{"138 0013 8000", "cn", "+8613800138000", ""},
		{"(650) 253-0000", "US", "+16502530000", ""},
		{"+44 20 8366 1177", "CN", "+442083661177", ""},
		{"13800138000", "", "", `phone "13800138000" has no country code`},
		{"13800138000", "ZZ", "", `phone "13800138000" has no country code`},
		{"12ab", "US", "", `phone "12ab" is not a valid number`},
		{"1-800-FLOWERS", "US", "", `phone "1-800-FLOWERS" is not a valid number`},
		{"+1 650 253 0000 ext. 12", "", "", `is not a valid number`},
		{"8.61381E+12", "CN", "", `scientific notation`},
		{"+999", "", "", `phone "+999" is not a valid number`},
		{"＋８６ １３８ ００１３ ８０００", "", "+8613800138000", ""},
		{"+86 (138) 0013–8000", "", "+8613800138000", ""},
		{"+86 138 0013 8000 #12", "", "", "is not a valid number"},
		{"+86+13800138000", "", "", "is not a valid number"},
		{"+1234567890123456789", "", "", "is not a valid number"},
		{"１３８００１３８０００", "CN", "+8613800138000", ""},
	} {
		r := Recipient{Phone: tc.phone}
		err := ValidateRecipient(&r, tc.region)
		if tc.reason == "" {
			if err != nil || r.Phone != tc.want {
				t.Errorf("%q in %q: got %q, %v; want %q", tc.phone, tc.region, r.Phone, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%q in %q: error %v, want one containing %q", tc.phone, tc.region, err, tc.reason)
		}
		if r.Phone != tc.phone {
			t.Errorf("%q: a failed validation changed the recipient to %+v", tc.phone, r)
		}
	}
}

func TestValidateRecipientProblems(t *testing.T) {
	for _, tc := range []struct {
		name  string
		r     Recipient
		field string
		want  string
	}{
		{"no address", Recipient{Locale: "en", ExternalID: "x"}, "", "no address"},
		{"email without domain", Recipient{Email: "ann@"}, "email", `email "ann@" is not a valid address`},
		{"email with name", Recipient{Email: "Ann <ann@example.org>"}, "email", "is not a valid address"},
		{"email without dot", Recipient{Email: "ann@localhost"}, "email", "is not a valid address"},
		{"openid", Recipient{WeChatOpenID: "o/../x"}, "wechat_openid", "is not a WeChat openid"},
		{"zone", Recipient{Phone: "+8613800138000", TimeZone: "Mars/Olympus"}, "timezone", `timezone "Mars/Olympus" is not an IANA time zone`},
		{"local zone", Recipient{Phone: "+8613800138000", TimeZone: "Local"}, "timezone", "is not an IANA time zone"},
		{"locale", Recipient{Phone: "+8613800138000", Locale: "english please"}, "locale", `locale "english please" is not a language tag`},
		{"und locale", Recipient{Phone: "+8613800138000", Locale: "und"}, "locale", "is not a language tag"},
		{"external id", Recipient{Phone: "+8613800138000", ExternalID: strings.Repeat("x", MaxExternalIDLen+1)}, "external_id", "longer than"},
		{"external id control", Recipient{Phone: "+8613800138000", ExternalID: "a\x01b"}, "external_id", "control characters"},
	} {
		r := tc.r
		err := ValidateRecipient(&r, "")
		var ve ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%s: error %v, want a ValidationError", tc.name, err)
			continue
		}
		if ve[0].Field != tc.field || !strings.Contains(ve[0].Reason, tc.want) {
			t.Errorf("%s: first problem %+v, want field %q with %q", tc.name, ve[0], tc.field, tc.want)
		}
		if r != tc.r {
			t.Errorf("%s: a failed validation changed the recipient", tc.name)
		}
	}
}

func TestValidateRecipientNeverQuotesOpenIDOrExternalID(t *testing.T) {
	r := Recipient{WeChatOpenID: "secret openid!", ExternalID: "secret-ref\x00"}
	err := ValidateRecipient(&r, "")
	if err == nil {
		t.Fatal("want an error")
	}
	if strings.Contains(err.Error(), "secret") {
		t.Fatalf("the reason quotes an openid or external id: %v", err)
	}
	if n := len(err.(ValidationError)); n != 2 {
		t.Fatalf("want both problems reported, got %d: %v", n, err)
	}
}
