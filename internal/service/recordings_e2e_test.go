package service_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
)

// TestACallRecordingIsEncryptedAtRestAndDecryptedOnDownload: with
// RECORDING_KEYS, the file the blob store holds is no WAV; the API's
// download is the recording.
func TestACallRecordingIsEncryptedAtRestAndDecryptedOnDownload(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) {
		c.RecordingKeys = "2026a:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{42}, 32))
	})
	e.sim.SetCallPlan(twiliosim.CallPlan{RecordSeconds: 3})
	id := e.send(keyA, `{"channel":"voice","to":{"phone":"`+patientPhone+`"},"body":"How are you feeling?",
		"record":{"prompt":"Please tell us after the tone.","max_length":30}}`)
	var m *ledger.Message
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if m, _ = e.svc.Ledger.Get(context.Background(), "", id); m != nil && m.Recording != nil {
			break
		}
	}
	if m == nil || m.Recording == nil {
		t.Fatal("the recording was never stored")
	}
	u, err := url.Parse(e.cfg.BlobURL)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := os.ReadFile(filepath.Join(u.Path, filepath.FromSlash(m.Recording.Key)))
	if err != nil {
		t.Fatal(err)
	}
	wav := twiliosim.ToneWAV(3)
	if bytes.Contains(stored, []byte("RIFF")) || bytes.Contains(stored, wav[44:144]) {
		t.Fatal("the blob store holds the recording as audio")
	}
	a := e.do("GET", "/v1/messages/"+id+"/recording", keyA, "")
	if a.Status != 200 || !bytes.Equal([]byte(a.Raw), wav) {
		t.Fatalf("download: %d, %d bytes", a.Status, len(a.Raw))
	}
}
