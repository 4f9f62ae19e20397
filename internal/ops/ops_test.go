package ops_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/bcrypt"

	"github.com/patientmsg/gateway/internal/ops"
	"github.com/patientmsg/gateway/internal/redistest"
)

const password = "correct horse battery staple"

// listener starts the ops handler on a Redis with one queued task whose
// payload holds a phone number, an email address and a message body.
func listener(t *testing.T, readOnly bool) (srv *httptest.Server, taskID, msgID string) {
	t.Helper()
	rs := redistest.Start(t)
	opt, err := redis.ParseURL(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	msgID = ulid.Make().String()
	payload, _ := json.Marshal(map[string]any{"id": msgID, "bc": "bc_" + ulid.Make().String() + ":7",
		"to": "+14155550100", "email": "patient@example.org", "openid": "oPatientOpenID0000000000000x",
		"body": "chest pain since this morning"})
	client := asynq.NewClientFromRedisClient(rdb)
	info, err := client.Enqueue(asynq.NewTask("send:sms", payload), asynq.Queue("gw:normal"), asynq.TaskID("m:"+msgID))
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	srv = httptest.NewServer(ops.Handler(ops.Options{Redis: rdb, Users: map[string]string{"alice": string(hash)},
		ReadOnly: readOnly, Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "metrics\n") })}))
	t.Cleanup(srv.Close)
	return srv, info.ID, msgID
}

func get(t *testing.T, url, user, pass string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func TestTheQueueDashboardNeedsAnOperator(t *testing.T) {
	srv, _, _ := listener(t, true)
	cases := []struct {
		name, path, user, pass string
		want                   int
	}{
		{"metrics need no password on the internal listener", "/metrics", "", "", 200},
		{"probes need none", "/readyz", "", "", 200},
		{"the dashboard asks for one", "/queues/", "", "", 401},
		{"its API too", "/queues/api/queues", "", "", 401},
		{"a wrong password is refused", "/queues/api/queues", "alice", "guess", 401},
		{"an unknown operator is refused", "/queues/api/queues", "mallory", password, 401},
		{"an operator gets in", "/queues/api/queues", "alice", password, 200},
		{"again, from memory", "/queues/api/queues", "alice", password, 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got, body := get(t, srv.URL+c.path, c.user, c.pass); got != c.want {
				t.Errorf("GET %s: %d, want %d (%s)", c.path, got, c.want, body)
			}
		})
	}
}

func TestTheQueueDashboardNeverShowsAPayload(t *testing.T) {
	srv, taskID, msgID := listener(t, true)
	for _, path := range []string{
		"/queues/api/queues/gw:normal/pending_tasks",
		"/queues/api/queues/gw:normal/tasks/" + taskID,
		"/queues/api/servers",
	} {
		code, body := get(t, srv.URL+path, "alice", password)
		if code != 200 {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		for _, secret := range []string{"4155550100", "patient@example.org", "oPatientOpenID", "chest pain"} {
			if strings.Contains(body, secret) {
				t.Errorf("GET %s shows %q: %s", path, secret, body)
			}
		}
		if path != "/queues/api/servers" && (!strings.Contains(body, msgID) || !strings.Contains(body, "send:sms")) {
			t.Errorf("GET %s does not show the task's type and message id: %s", path, body)
		}
	}
}

func TestTheQueueDashboardIsReadOnlyByDefault(t *testing.T) {
	srv, taskID, _ := listener(t, true)
	req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/queues/api/queues/gw:normal/pending_tasks/"+taskID, nil)
	req.SetBasicAuth("alice", password)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("DELETE a task: %d, want 405", res.StatusCode)
	}
	if _, body := get(t, srv.URL+"/queues/api/queues/gw:normal/pending_tasks", "alice", password); !strings.Contains(body, taskID) {
		t.Errorf("the task is gone: %s", body)
	}
}

func TestTheQueueDashboardLoadsNothingFromOutside(t *testing.T) {
	srv, _, _ := listener(t, true)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/queues/", nil)
	req.SetBasicAuth("alice", password)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	page := string(b)
	if res.StatusCode != 200 || !strings.Contains(page, `<div id="root">`) {
		t.Fatalf("%d: %s", res.StatusCode, page)
	}
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Errorf("the page refers to another host: %s", page)
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
}

func TestPayloadKeepsTheTypeAndTheIdsOnly(t *testing.T) {
	id := ulid.Make().String()
	got := ops.Payload("inbound:reply", []byte(`{"id":"`+id+`","from":{"phone":"+8613800138000"},"body":"help","n":"12345678901234567890123456"}`))
	if !strings.Contains(got, id) || !strings.Contains(got, "inbound:reply") {
		t.Errorf("Payload = %s: no type or id", got)
	}
	for _, secret := range []string{"8613800138000", "help", "12345678901234567890123456"} {
		if strings.Contains(got, secret) {
			t.Errorf("Payload = %s shows %q", got, secret)
		}
	}
	if got := ops.Payload("x", []byte("not json +14155550100")); strings.Contains(got, "4155550100") {
		t.Errorf("Payload = %s", got)
	}
}
