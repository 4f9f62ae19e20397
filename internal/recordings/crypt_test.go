package recordings_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/recordings"
)

func keyOf(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) }

func readRecording(t *testing.T, s *recordings.Store, key string) ([]byte, error) {
	t.Helper()
	r, size, err := s.Open(context.Background(), key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err == nil && int64(len(b)) != size {
		t.Fatalf("size %d for %d bytes", size, len(b))
	}
	return b, err
}

// TestRecordingsAreSealedAtRestAndKeysRotate: with keys, what the blob
// store holds is no WAV; a download opens it; a new current key seals new
// recordings while the old one still opens the old; a recording moved to
// another place, or whose key is gone, does not open; one stored before
// encryption reads as it is.
func TestRecordingsAreSealedAtRestAndKeysRotate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := recordings.Open(ctx, "file://"+dir+"?create_dir=true")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wav := append([]byte("RIFF\x24\x00\x00\x00WAVEfmt "), bytes.Repeat([]byte{7}, 4000)...)
	legacy := recordings.Key("clinic-a", "01JD0000000000000000000001", "RE01", "audio/wav")
	if _, err := s.Put(ctx, legacy, "audio/wav", bytes.NewReader(wav)); err != nil {
		t.Fatal(err)
	}

	if s.Keys, err = recordings.ParseKeyring("k1:" + keyOf(1)); err != nil {
		t.Fatal(err)
	}
	old := recordings.Key("clinic-a", "01JD0000000000000000000002", "RE02", "audio/wav")
	if n, err := s.Put(ctx, old, "audio/wav", bytes.NewReader(wav)); err != nil || n != int64(len(wav)) {
		t.Fatalf("Put = %d, %v", n, err)
	}
	stored, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(old)))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(stored, []byte("RIFF")) || bytes.Contains(stored, []byte("WAVE")) || bytes.Contains(stored, bytes.Repeat([]byte{7}, 16)) {
		t.Fatal("the stored recording is readable audio")
	}
	if got, err := readRecording(t, s, old); err != nil || !bytes.Equal(got, wav) {
		t.Fatalf("download: %d bytes, %v", len(got), err)
	}
	if got, err := readRecording(t, s, legacy); err != nil || !bytes.Equal(got, wav) {
		t.Fatalf("a recording from before encryption: %d bytes, %v", len(got), err)
	}

	// Rotation: k2 seals, k1 still opens.
	if s.Keys, err = recordings.ParseKeyring("k2:" + keyOf(2) + ", k1:" + keyOf(1)); err != nil {
		t.Fatal(err)
	}
	fresh := recordings.Key("clinic-a", "01JD0000000000000000000003", "RE03", "audio/wav")
	if _, err := s.Put(ctx, fresh, "audio/wav", bytes.NewReader(wav)); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{old, fresh} {
		if got, err := readRecording(t, s, k); err != nil || !bytes.Equal(got, wav) {
			t.Fatalf("%s after rotation: %v", k, err)
		}
	}
	// Moved to another patient's place: does not open.
	moved := recordings.Key("clinic-a", "01JD0000000000000000000009", "RE03", "audio/wav")
	raw, _ := os.ReadFile(filepath.Join(dir, filepath.FromSlash(fresh)))
	if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, filepath.FromSlash(moved))), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(moved)), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readRecording(t, s, moved); err == nil {
		t.Fatal("a recording moved to another place opened")
	}
	// k1 retired: its recordings no longer open, and say why.
	if s.Keys, err = recordings.ParseKeyring("k2:" + keyOf(2)); err != nil {
		t.Fatal(err)
	}
	if _, err := readRecording(t, s, old); !errors.Is(err, recordings.ErrUnknownKey) {
		t.Fatalf("a recording of a retired key: %v", err)
	}
}

func TestRecordingKeysAreCheckedWithoutRepeatingThem(t *testing.T) {
	secret := keyOf(9)
	for _, bad := range []string{"", "k1", "k1:short", "bad id:" + secret, "k1:" + secret + ",k1:" + secret, ":" + secret} {
		_, err := recordings.ParseKeyring(bad)
		if err == nil {
			t.Errorf("%q accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error repeats the key: %v", err)
		}
	}
}

// TestEachTenantsRecordingsAreSweptAfterItsOwnRetention: a tenant with a
// shorter retention loses its recordings first.
func TestEachTenantsRecordingsAreSweptAfterItsOwnRetention(t *testing.T) {
	ctx := context.Background()
	s, err := recordings.Open(ctx, "file://"+t.TempDir()+"?create_dir=true")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := recordings.Key("clinic-a", "01JD0000000000000000000001", "RE01", "audio/wav")
	b := recordings.Key("clinic-b", "01JD0000000000000000000002", "RE02", "audio/wav")
	for _, k := range []string{a, b} {
		if _, err := s.Put(ctx, k, "audio/wav", strings.NewReader("RIFF")); err != nil {
			t.Fatal(err)
		}
	}
	later := time.Now().Add(3 * 24 * time.Hour)
	n, err := s.SweepEach(ctx, func(tenant string) time.Duration {
		if tenant == "clinic-a" {
			return 2 * 24 * time.Hour
		}
		return 30 * 24 * time.Hour
	}, later)
	if err != nil || n != 1 {
		t.Fatalf("swept %d, %v", n, err)
	}
	if _, err := readRecording(t, s, a); !errors.Is(err, recordings.ErrNotFound) {
		t.Fatalf("clinic A's recording past its 2 days: %v", err)
	}
	if _, err := readRecording(t, s, b); err != nil {
		t.Fatalf("clinic B's recording within its 30 days: %v", err)
	}
}
