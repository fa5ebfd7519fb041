package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzRequestBody feeds arbitrary bodies to the POST endpoints: the server
// must answer every one with 200 or a 4xx JSON Error, never panic or 500,
// and a request the Service sees must have passed Normalize.
func FuzzRequestBody(f *testing.F) {
	f.Add(false, []byte(`{"pod_id":"abc","netns":"/var/run/netns/p1"}`))
	f.Add(false, []byte(`{"pod_id":"abc","netns":"/n","ifname":"net1","pod_namespace":"default","pod_name":"web-0"}`))
	f.Add(false, []byte(`{"pod_id":5}`))
	f.Add(true, []byte(`{"in":"abc","dst":"10.244.2.3","proto":"udp","sport":1,"dport":53,"ttl":2,"size":100}`))
	f.Add(true, []byte(`{"in":"abc","frame":"AQIDBAUGBwgJCgsMDQ4="}`))
	f.Add(true, []byte(`{"in":"abc","dst":"10.244.2.300"}`))
	f.Add(true, []byte(`[]`))
	f.Fuzz(func(t *testing.T, trace bool, body []byte) {
		svc := &fakeService{}
		srv := NewServer(svc, nil)
		path := "/v1/ports"
		if trace {
			path = "/v1/trace"
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
		if rec.Code != http.StatusOK {
			var e Error
			if rec.Code < 400 || rec.Code >= 500 {
				t.Fatalf("status %d for body %q: %s", rec.Code, body, rec.Body)
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" || e.Code == "" {
				t.Fatalf("status %d with a body that is not an Error: %q", rec.Code, rec.Body)
			}
			if strings.Contains(e.Error, "\n") {
				t.Fatalf("multi-line error %q", e.Error)
			}
		}
		for _, r := range svc.attached {
			if err := r.Normalize(); err != nil || r.IfName == "" {
				t.Fatalf("service got an attach request that does not normalize: %+v: %v", r, err)
			}
		}
		for _, r := range svc.traced {
			if err := r.Normalize(); err != nil || r.In == "" {
				t.Fatalf("service got a trace request that does not normalize: %+v: %v", r, err)
			}
		}
	})
}
