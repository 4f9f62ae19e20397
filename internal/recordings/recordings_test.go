package recordings_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/recordings"
)

func TestRecordingsAreStoredReadAndSweptAfterTheirRetention(t *testing.T) {
	ctx := context.Background()
	s, err := recordings.Open(ctx, "file://"+t.TempDir()+"?create_dir=true")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	key := recordings.Key("clinic-a", "01JD0000000000000000000000", "RE0123", "audio/wav")
	if key != "recordings/clinic-a/01JD0000000000000000000000/RE0123.wav" {
		t.Fatalf("key %q", key)
	}
	n, err := s.Put(ctx, key, "audio/wav", strings.NewReader("RIFF....WAVE"))
	if err != nil || n != 12 {
		t.Fatalf("Put = %d, %v", n, err)
	}
	r, size, err := s.Open(ctx, key)
	if err != nil || size != 12 {
		t.Fatalf("Open = %d, %v", size, err)
	}
	b, _ := io.ReadAll(r)
	r.Close()
	if string(b) != "RIFF....WAVE" {
		t.Fatalf("read back %q", b)
	}
	if _, _, err := s.Open(ctx, "recordings/none"); !errors.Is(err, recordings.ErrNotFound) {
		t.Fatalf("missing recording: %v", err)
	}
	if n, err := s.Sweep(ctx, 24*time.Hour, time.Now()); err != nil || n != 0 {
		t.Fatalf("a fresh recording was swept: %d %v", n, err)
	}
	if n, err := s.Sweep(ctx, 24*time.Hour, time.Now().Add(25*time.Hour)); err != nil || n != 1 {
		t.Fatalf("an expired recording was not swept: %d %v", n, err)
	}
	if _, _, err := s.Open(ctx, key); !errors.Is(err, recordings.ErrNotFound) {
		t.Fatalf("after the sweep: %v", err)
	}
}

func TestAnOversizedRecordingIsRefusedAndNotKept(t *testing.T) {
	ctx := context.Background()
	s, _ := recordings.Open(ctx, "file://"+t.TempDir()+"?create_dir=true")
	defer s.Close()
	big := io.LimitReader(zeros{}, recordings.MaxSize+10)
	if _, err := s.Put(ctx, "recordings/t/m/RE1.wav", "audio/wav", big); err == nil {
		t.Fatal("an oversized recording was accepted")
	}
	if _, _, err := s.Open(ctx, "recordings/t/m/RE1.wav"); !errors.Is(err, recordings.ErrNotFound) {
		t.Fatalf("an oversized recording was kept: %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
