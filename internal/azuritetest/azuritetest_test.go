package azuritetest

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestStartAndNewContainer(t *testing.T) {
	s := Start(t)
	if !strings.HasPrefix(s.ServiceURL, "http://127.0.0.1:") || !strings.HasSuffix(s.ServiceURL, "/"+Account) {
		t.Fatalf("service url %s", s.ServiceURL)
	}
	name := s.NewContainer(t)
	pager := s.client.NewListContainersPager(nil)
	found := false
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range page.ContainerItems {
			found = found || *c.Name == name
		}
	}
	if !found {
		t.Fatalf("container %s not listed", name)
	}
	// The key is passed in the environment, never in argv (ps shows argv).
	for _, a := range s.cmd.Args {
		if strings.Contains(a, s.Key) {
			t.Fatalf("the account key is in azurite's argv: %q", s.cmd.Args)
		}
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(s.cmd.Process.Pid) + "/cmdline")
	if err == nil && strings.Contains(string(cmdline), s.Key) {
		t.Fatal("the account key is in azurite's command line")
	}
	if Shared(t) != Shared(t) {
		t.Fatal("Shared started two servers")
	}
}
