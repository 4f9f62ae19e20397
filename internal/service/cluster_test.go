package service_test

import (
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
)

func TestTheGatewayRunsOnRedisCluster(t *testing.T) {
	rs := redistest.StartCluster(t)
	// The test is only worth something if the server enforces slots.
	if err := rs.Client().Eval(t.Context(), "return 1", []string{"a", "b"}).Err(); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("the test cluster does not refuse a cross-slot script: %v", err)
	}
	e := startOn(t, rs, config.RoleAll, func(c *config.Config) { c.RedisCluster = true })

	id := e.send(keyA, smsBody(patientPhone, "hi"), "Idempotency-Key", "k-1")
	m := e.waitFor(id, ledger.StatusDelivered, 10*time.Second)
	if again := e.do("POST", "/v1/messages", keyA, smsBody(patientPhone, "hi"), "Idempotency-Key", "k-1"); again.Status != 200 || again.Body["id"] != id {
		t.Fatalf("idempotent replay on Cluster: %d %s", again.Status, again.Raw)
	}
	if got, err := e.svc.Ledger.MessageIDByProvider(t.Context(), "sms", m.ProviderID); err != nil || got != id {
		t.Fatalf("provider index: %q %v", got, err)
	}

	e.sim.Script(twiliosim500())
	retried := e.send(keyA, smsBody(patientPhone, "again"))
	e.waitFor(retried, ledger.StatusDelivered, 15*time.Second)

	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	sched := e.send(keyA, smsBody(patientPhone, "later", "send_at", later))
	if a := e.do("POST", "/v1/messages/"+sched+"/cancel", keyA, ""); a.Status != 200 {
		t.Fatalf("cancel on Cluster: %d %s", a.Status, a.Raw)
	}
	if a := e.do("GET", "/v1/messages", keyA, ""); a.Status != 200 || len(a.Body["messages"].([]any)) != 3 {
		t.Fatalf("list on Cluster: %s", a.Raw)
	}
	// Sends created an implicit contact; the clinic adopts its phone.
	if a := e.do("PUT", "/v1/contacts/mrn-9", keyA, `{"phone":"`+patientPhone+`"}`); a.Status != 200 {
		t.Fatalf("adopting an implicit contact on Cluster: %d %s", a.Status, a.Raw)
	}
	// A broadcast: its fan-out script, pipelined sends and records made
	// at send time keep to one slot each.
	b := e.do("POST", "/v1/broadcasts", keyA, `{"channels":["sms"],"body":{"en":"The clinic is closed today."},
	  "audience":[{"phone":"+14155550401"},{"phone":"+14155550402"},{"phone":"+14155550403"}]}`)
	if b.Status != 202 {
		t.Fatalf("broadcast on Cluster: %d %s", b.Status, b.Raw)
	}
	e.waitRoster(b.Body["id"].(string), 10*time.Second, "the broadcast delivered", func(r map[string]any) bool {
		return count(r, "people", "acknowledged") == 3
	})
	if logs := e.logs.String(); containsAny(logs, "CROSSSLOT", "MOVED") {
		t.Fatalf("cluster errors in the logs:\n%s", logs)
	}
}

func TestTheGatewayFindsItsPrimaryThroughSentinel(t *testing.T) {
	sen := redistest.StartSentinel(t)
	e := startOn(t, sen.Primary, config.RoleAll, func(c *config.Config) {
		c.RedisURL = "redis://ignored-host:1/0" // with Sentinel only the password and database are read
		c.RedisSentinelMaster = sen.MasterName
		c.RedisSentinelAddrs = []string{sen.Addr}
	})
	id := e.send(keyA, smsBody(patientPhone, "hi"))
	e.waitFor(id, ledger.StatusDelivered, 10*time.Second)
}

func TestAWorkerOnlyProcessAnswersHealthProbes(t *testing.T) {
	e := start(t, config.RoleWorker, func(c *config.Config) { c.OpsAddr = "127.0.0.1:0" })
	base := "http://" + e.svc.OpsAddr()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		resp, err := e.http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s = %d", path, resp.StatusCode)
		}
	}
	if !e.redis.CanRestart() {
		return
	}
	e.redis.Stop()
	resp, err := e.http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("/readyz without Redis = %d", resp.StatusCode)
	}
	e.redis.Restart()
}
