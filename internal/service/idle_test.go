package service_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/service"
)

func TestShutdownIsNotHeldUpByAnIdleConnection(t *testing.T) {
	e := start(t, config.RoleAPI)
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	time.Sleep(50 * time.Millisecond)
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = e.svc.Shutdown(ctx)
	if took := time.Since(began); took > service.APIDrain+time.Second {
		t.Fatalf("shutdown took %s with one idle connection open", took)
	}
}
