package contacts_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/invalid"
)

func TestAContactsInputIsNormalisedOrRefusedFieldByField(t *testing.T) {
	s := func(v string) *string { return &v }
	ct, err := contacts.Input{Phone: s("+44 7911 123456"), Email: s("Pat@Example.ORG"), Locale: s("zh_CN"), TimeZone: s("Asia/Shanghai")}.Contact("MRN-1")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ct.Identities); got != "[phone:+447911123456 email:Pat@example.org]" || ct.Locale != "zh-CN" || ct.TimeZone != "Asia/Shanghai" {
		t.Fatalf("normalised: %s %q %q", got, ct.Locale, ct.TimeZone)
	}
	_, err = contacts.Input{Phone: s("0791"), Email: s("not an address"), WeChatOpenID: s("o ABC"), Locale: s("und"), TimeZone: s("Local")}.Contact("MRN-1")
	var bad *invalid.Error
	if !errors.As(err, &bad) || len(bad.Errors) != 5 {
		t.Fatalf("every bad field named: %v", err)
	}
	if _, err := (contacts.Input{}).Contact("MRN-1"); !errors.As(err, &bad) || bad.Errors[0].Field != "phone" {
		t.Fatalf("a contact without an address: %v", err)
	}
	for id, ok := range map[string]bool{"MRN-1.a_b": true, "": false, "a b": false, "病历": false} {
		if contacts.ValidID(id) != ok {
			t.Errorf("ValidID(%q) = %v", id, !ok)
		}
	}
}
