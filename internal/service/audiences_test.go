package service_test

import (
	"bytes"
	"fmt"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/internal/config"
)

// upload posts a CSV as a multipart form, as curl -F file=@list.csv does.
func (e *env) upload(key, query string, csv []byte) answer {
	e.t.Helper()
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	f, _ := w.CreateFormFile("file", "patients.csv")
	_, _ = f.Write(csv)
	_ = w.Close()
	return e.do("POST", "/v1/audiences"+query, key, body.String(), "Content-Type", w.FormDataContentType())
}

func TestAnAudienceCSVIsCheckedRowByRow(t *testing.T) {
	e := start(t, config.RoleAll)
	csv := "\ufeffPhone,Email,Locale,TimeZone,External_ID,Name\r\n" +
		"+8613800138000,,zh-CN,Asia/Shanghai,MRN-1,Li Wei\r\n" +
		"12ab,,en,,MRN-2,Bad Number\r\n" +
		"+14155550100,pat@example.org,en,America/Los_Angeles,MRN-3,Pat\r\n" +
		"+14155550100,,en,,MRN-4,Same Phone\r\n" +
		",,en,,MRN-5,No Address\r\n" +
		"13900139000,,zh-CN,Mars/Base,MRN-6,Bad Zone\r\n"
	a := e.upload(keyA, "?default_region=CN", []byte(csv))
	if a.Status != 201 {
		t.Fatalf("upload = %d %s", a.Status, a.Raw)
	}
	if a.Body["count"].(float64) != 2 || a.Body["duplicates"].(float64) != 1 || a.Body["invalid"].(float64) != 3 {
		t.Fatalf("counts: %s", a.Raw)
	}
	lines := map[float64]string{}
	for _, x := range a.Body["errors"].([]any) {
		m := x.(map[string]any)
		lines[m["line"].(float64)] = m["reason"].(string)
	}
	for line, want := range map[float64]string{3: "phone", 5: "duplicate of line 4", 6: "address", 7: "zone"} {
		if !strings.Contains(strings.ToLower(lines[line]), want) {
			t.Errorf("line %v: %q, want it to mention %q", line, lines[line], want)
		}
	}
	if !strings.Contains(a.Raw, `"Name"`) || strings.Contains(a.Raw, "Li Wei") || strings.Contains(a.Raw, "8613800138000") {
		t.Fatalf("the answer must list the ignored name column and never the recipients: %s", a.Raw)
	}
	id := a.Body["id"].(string)
	if got := e.do("GET", "/v1/audiences/"+id, keyA, ""); got.Status != 200 || got.Body["count"].(float64) != 2 {
		t.Fatalf("GET = %d %s", got.Status, got.Raw)
	}
	if got := e.do("GET", "/v1/audiences/"+id, keyB, ""); got.Status != 404 {
		t.Fatalf("another tenant's audience: %d", got.Status)
	}

	// A list larger than an API request may be (64 KiB) is an upload.
	var big strings.Builder
	big.WriteString("phone\n")
	for i := 0; i < 6000; i++ {
		fmt.Fprintf(&big, "+141555%05d\n", i)
	}
	if got := e.do("POST", "/v1/audiences", keyA, big.String(), "Content-Type", "text/csv"); got.Status != 201 || got.Body["count"].(float64) != 6000 {
		t.Fatalf("a 6,000-row text/csv upload = %d %.300s", got.Status, got.Raw)
	}
	if got := e.do("POST", "/v1/messages", keyA, big.String()); got.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("a large body elsewhere = %d", got.Status)
	}
	for name, bad := range map[string]struct {
		status int
		ct     string
		body   string
	}{
		"no address column":   {422, "text/csv", "locale,timezone\nen,UTC\n"},
		"no usable row":       {422, "text/csv", "phone\n12ab\n"},
		"JSON instead of CSV": {415, "application/json", `{"phone":"+14155550100"}`},
	} {
		if got := e.do("POST", "/v1/audiences", keyA, bad.body, "Content-Type", bad.ct); got.Status != bad.status || got.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: %d %s %s", name, got.Status, got.Header.Get("Content-Type"), got.Raw)
		}
	}
}
