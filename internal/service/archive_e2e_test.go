package service_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
)

// TestADeliveredMessagePastTheHotWindowIsReadFromTheArchiveAndErasedThere:
// with GATEWAY_HOT_RETENTION, a delivered SMS moves out of Redis once it
// is older than the hot window (the archive's clock is moved on 3 days);
// GET /v1/messages/{id} answers for it as before, from the blob store; an
// erasure of the patient scrubs it there.
func TestADeliveredMessagePastTheHotWindowIsReadFromTheArchiveAndErasedThere(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) { c.HotRetention = 48 * time.Hour })
	const phone = "+14155550177"
	id := e.send(keyA, smsBody(phone, "Your scan results are ready"))
	e.waitFor(id, ledger.StatusDelivered, 10*time.Second)
	hot := e.do("GET", "/v1/messages/"+id, keyA, "")
	if hot.Status != 200 {
		t.Fatalf("GET before the move: %d %s", hot.Status, hot.Raw)
	}
	e.svc.Archive.Now = func() time.Time { return time.Now().Add(72 * time.Hour) }
	res, err := e.svc.Archive.Pass(context.Background())
	if err != nil || res.Archived != 1 {
		t.Fatalf("archive pass: %+v %v", res, err)
	}
	if n, _ := e.svc.Redis.Exists(context.Background(), "gw:m:{"+id+"}").Result(); n != 0 {
		t.Fatal("the archived message is still in Redis")
	}
	cold := e.do("GET", "/v1/messages/"+id, keyA, "")
	if cold.Status != 200 || cold.Body["status"] != "delivered" || cold.Body["id"] != id ||
		len(cold.Body["events"].([]any)) != len(hot.Body["events"].([]any)) {
		t.Fatalf("GET after the move: %d %s\nbefore: %s", cold.Status, cold.Raw, hot.Raw)
	}
	// A patient's late reply, complaint or unsubscription names only the
	// message: the receiver finds it in the archive too.
	if m, err := e.svc.Inbound.Message(context.Background(), id); err != nil || m.To.Phone != phone {
		t.Fatalf("the receiver's look-up of the archived message: %+v %v", m, err)
	}
	if other := e.do("GET", "/v1/messages/"+id, keyB, ""); other.Status != 404 {
		t.Fatalf("another clinic reads the archived message: %d", other.Status)
	}
	// Too late to cancel it, as before the move; unknown to another clinic.
	if c := e.do("POST", "/v1/messages/"+id+"/cancel", keyA, ""); c.Status != 409 || !strings.Contains(c.Raw, "already delivered") {
		t.Fatalf("cancel of the archived message: %d %s", c.Status, c.Raw)
	}
	if c := e.do("POST", "/v1/messages/"+id+"/cancel", keyB, ""); c.Status != 404 {
		t.Fatalf("another clinic cancels the archived message: %d %s", c.Status, c.Raw)
	}
	er := e.do("DELETE", "/v1/contacts?phone="+url.QueryEscape(phone), keyA, "")
	if er.Status != 202 {
		t.Fatalf("erasure: %d %s", er.Status, er.Raw)
	}
	waitUntil(t, 20*time.Second, "the erasure to complete", func() bool {
		return e.do("GET", er.Header.Get("Location"), keyA, "").Body["state"] == "completed"
	})
	m, err := e.svc.Ledger.Get(context.Background(), "clinic-a", id)
	if err != nil || m.To.Phone != "" || m.Body != "" || m.ErasedAt == nil {
		t.Fatalf("the archived message after the erasure: %+v %v", m, err)
	}
	done := e.do("GET", er.Header.Get("Location"), keyA, "")
	if erased, _ := done.Body["erased"].(map[string]any); erased["archived_messages"] != float64(1) {
		t.Fatalf("the erasure's counts: %s", done.Raw)
	}
}
