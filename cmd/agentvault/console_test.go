package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/agentvault/agentvault/internal/vaulttest"
	"github.com/agentvault/agentvault/notify"
)

// browser starts headless Chromium from the system's packages with a fresh
// profile. Outside CI a machine without Chromium skips the browser tests;
// with AGENTVAULT_REQUIRE_BROWSER=1 (the README test command sets it) a
// missing browser fails them.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := os.Getenv("AGENTVAULT_CHROMIUM")
	if path == "" {
		for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
			if p, err := exec.LookPath(name); err == nil {
				path = p
				break
			}
		}
	}
	if path == "" {
		vaulttest.Missing(t, "AGENTVAULT_REQUIRE_BROWSER", "no Chromium found: install Debian's chromium (scripts/test.sh does)")
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	// Start the browser on this context, so that the per-step deadlines
	// of ui do not own it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium (%s): %v", path, err)
	}
	return ctx
}

// ui runs browser steps, each group with its own deadline, failing the
// test with the group that failed, the page's text and a screenshot.
func ui(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		shot := filepath.Join(os.TempDir(), "agentvault-console-failure.png")
		if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
			os.WriteFile(shot, png, 0o644)
		}
		t.Fatalf("%s: %v\nscreenshot: %s\npage text:\n%s", what, err, shot, page)
	}
}

// waitJS waits until a JavaScript predicate holds on the page.
func waitJS(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(20*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))(ctx, tg)
		return err
	})
}

// snapshot saves a screenshot when AGENTVAULT_SCREENSHOTS names a
// directory (for the docs and for looking at the console); otherwise it
// does nothing.
func snapshot(t *testing.T, ctx context.Context, name string) {
	dir := os.Getenv("AGENTVAULT_SCREENSHOTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func pageText(t *testing.T, ctx context.Context) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func signIn(token string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#signin-button")),
		chromedp.WaitVisible(chromedp.CSS("#whoami")),
	)
}

// TestApproverConsole is the approval story end to end, through the real
// binary and a real browser: an agent asks for a salary above the
// threshold and is held; the webhook hears of it (signed, no value); an
// approver signs in to the console, sees the request without the value,
// and approves it with a reason; the agent redeems it once; an auditor
// sees the verified log and finds the approval by filtering.
func TestApproverConsole(t *testing.T) {
	t.Parallel()
	ctx := browser(t)

	secret := "webhook-secret-for-the-e2e-test-0123"
	hooks := make(chan *http.Request, 10)
	bodies := make(chan []byte, 10)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hooks <- r
		bodies <- b
	}))
	defer receiver.Close()

	dir := t.TempDir()
	s := start(t, dir, append(adminEnv, "AGENTVAULT_WEBHOOK_SECRET="+secret), "--approval-webhook", receiver.URL+"/hooks/agentvault", "--public-url", "https://vault.example.com/")
	s.must(201, "POST", "/v1/collections", admin, map[string]any{"name": "comp", "fields": []map[string]any{
		{"name": "employee", "type": "string"},
		{"name": "salary", "type": "number", "sensitive": true, "approval_above": 100000},
	}})
	mk := func(name string, roles ...string) (string, string) {
		p := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": name, "roles": roles})
		return p["token"].(string), p["id"].(string)
	}
	writer, _ := mk("hr-app", "writer")
	agent, agentID := mk("payroll-bot", "agent")
	approver, _ := mk("carol", "approver")
	auditor, _ := mk("dana", "auditor")
	const salary = "187345"
	_, fields := firstRecord(s.must(201, "POST", "/v1/collections/comp/records", writer, map[string]any{"records": []map[string]any{
		{"fields": map[string]any{"employee": "e-1", "salary": 187345}},
	}}))
	token := fields["salary"].(string)
	recordID := ""
	s.must(201, "POST", "/v1/grants", admin, map[string]any{"principal_id": agentID, "collection": "comp", "fields": []string{"salary"},
		"purpose": "payroll", "ttl": "1h", "reveal": "plain"})

	// The agent reads the record first: the read is audited.
	recordID = s.must(200, "GET", "/v1/collections/comp/records?purpose=payroll", agent, nil)["records"].([]any)[0].(map[string]any)["id"].(string)
	s.must(200, "GET", "/v1/collections/comp/records/"+recordID+"?purpose=payroll", agent, nil)

	// The agent asks and is held.
	out := s.must(200, "POST", "/v1/detokenize", agent, map[string]any{"tokens": []string{token}, "purpose": "payroll"})
	res := out["results"].([]any)[0].(map[string]any)
	id, _ := res["approval_id"].(string)
	if res["status"] != "pending_approval" || id == "" || res["value"] != nil {
		t.Fatalf("held request: %v", out)
	}

	// The webhook hears of it: signed, and without the value or the token.
	select {
	case r := <-hooks:
		body := <-bodies
		if err := notify.Verify([]byte(secret), r.Header.Get(notify.HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
			t.Fatalf("webhook signature: %v", err)
		}
		var ev struct {
			Type string
			Data struct {
				ID, Purpose, Collection string
				RequesterName           string `json:"requester_name"`
				ConsoleURL              string `json:"console_url"`
			}
		}
		json.Unmarshal(body, &ev)
		if ev.Type != "approval.requested" || ev.Data.ID != id || ev.Data.Purpose != "payroll" || ev.Data.RequesterName != "payroll-bot" ||
			ev.Data.ConsoleURL != "https://vault.example.com/ui/#approval="+id || r.URL.Path != "/hooks/agentvault" {
			t.Fatalf("webhook event: %s", body)
		}
		if strings.Contains(string(body), salary) || strings.Contains(string(body), token) {
			t.Fatalf("webhook body holds the value or the token: %s", body)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no webhook for the new approval")
	}

	// A wrong token is refused with a clear message.
	ui(t, ctx, "bad sign-in",
		chromedp.Navigate(s.url+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), "avt_NOTAREALTOKEN"),
		chromedp.Click(chromedp.CSS("#signin-button")),
		waitJS(`document.querySelector('#error').textContent.includes('not valid')`),
	)

	// The approver follows the webhook's link: after signing in, the
	// console opens that request for review. It shows what was asked for,
	// never the value.
	row := fmt.Sprintf(`#pending-table tbody tr[data-approval-id=%q]`, id)
	ui(t, ctx, "approver follows the link, signs in and sees the request",
		chromedp.Navigate(s.url+"/ui/#approval="+id),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[bool](`(document.querySelector('#token').value = '') === ''`)(ctx, tg)
			return err
		}),
		signIn(approver),
		chromedp.WaitVisible(chromedp.CSS(row)),
		chromedp.WaitVisible(chromedp.CSS("#review")),
		waitJS(fmt.Sprintf(`document.querySelector('#review-details').innerText.includes(%q)`, id)),
		chromedp.Click(chromedp.CSS("#cancel-review")),
		chromedp.WaitNotVisible(chromedp.CSS("#review")),
	)
	rowText, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(row)))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"payroll-bot", "payroll", "comp", "salary", "field salary is above 100000", "ago"} {
		if !strings.Contains(rowText, want) {
			t.Errorf("pending row lacks %q: %q", want, rowText)
		}
	}
	ui(t, ctx, "approve with a reason",
		chromedp.Click(chromedp.CSS(row+" button.review-button")),
		chromedp.WaitVisible(chromedp.CSS("#review")),
		// Without a reason the decision is refused in the page.
		chromedp.Click(chromedp.CSS("#approve")),
		chromedp.WaitVisible(chromedp.CSS("#review")),
	)
	snapshot(t, ctx, "console-review")
	ui(t, ctx, "approve with a reason",
		chromedp.SendKeys(chromedp.CSS("#reason"), "Quarterly comp review, ticket HR-7"),
		chromedp.Click(chromedp.CSS("#approve")),
		waitJS(`document.querySelector('#status').textContent.startsWith('Approved')`),
		chromedp.WaitNotPresent(chromedp.CSS(row)),
	)
	if txt := pageText(t, ctx); strings.Contains(txt, salary) {
		t.Fatalf("the console showed the value:\n%s", txt)
	}
	ui(t, ctx, "decided list",
		chromedp.Click(chromedp.CSS("#tab-decided")),
		waitJS(fmt.Sprintf(`(() => { const r = document.querySelector('#decided-table tbody tr[data-approval-id=%q]'); return r && r.innerText.includes('approved') && r.innerText.includes('carol') && r.innerText.includes('HR-7'); })()`, id)),
	)
	snapshot(t, ctx, "console-decided")

	// The webhook hears of the decision too (the agent's cue to redeem).
	select {
	case r := <-hooks:
		body := <-bodies
		var ev struct {
			Type string
			Data struct {
				ID, Status    string
				DecidedByName string `json:"decided_by_name"`
			}
		}
		json.Unmarshal(body, &ev)
		if ev.Type != "approval.approved" || r.Header.Get(notify.HeaderEvent) != "approval.approved" || ev.Data.ID != id || ev.Data.Status != "approved" || ev.Data.DecidedByName != "carol" {
			t.Fatalf("decision webhook: %s", body)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no webhook for the decision")
	}

	// The agent redeems it, once.
	redeem := map[string]any{"tokens": []string{token}, "purpose": "payroll", "approval_id": id}
	out = s.must(200, "POST", "/v1/detokenize", agent, redeem)
	if r := out["results"].([]any)[0].(map[string]any); r["status"] != "ok" || fmt.Sprint(r["value"]) != salary {
		t.Fatalf("redemption: %v", out)
	}
	s.must(409, "POST", "/v1/detokenize", agent, redeem)

	// The auditor sees a verified chain and finds who approved what, and why.
	ui(t, ctx, "auditor",
		chromedp.Click(chromedp.CSS("#signout")),
		signIn(auditor),
		waitJS(`document.querySelector('#verify-status').classList.contains('ok')`),
		waitJS(`document.querySelectorAll('#audit-table tbody tr').length > 5`),
		chromedp.SetValue(chromedp.CSS("#f-action"), "approval.approve"),
		chromedp.Click(chromedp.CSS("#apply-filter")),
		waitJS(`(() => { const rows = document.querySelectorAll('#audit-table tbody tr'); return rows.length === 1 && rows[0].innerText.includes('carol') && rows[0].innerText.includes('HR-7'); })()`),
		// Reads of one record, with their purpose and fields.
		chromedp.SetValue(chromedp.CSS("#f-action"), "records.read"),
		chromedp.SetValue(chromedp.CSS("#f-record"), recordID),
		chromedp.Click(chromedp.CSS("#apply-filter")),
		// The listing's page and the single read: two entries.
		waitJS(`(() => { const rows = [...document.querySelectorAll('#audit-table tbody tr')]; return rows.length === 2 && rows.every(r => r.innerText.includes('payroll') && r.innerText.includes('salary') && r.innerText.includes('payroll-bot')); })()`),
	)
	snapshot(t, ctx, "console-audit")
	if txt := pageText(t, ctx); !strings.Contains(txt, "Chain verified") || strings.Contains(txt, salary) {
		t.Fatalf("auditor view:\n%s", txt)
	}
	assertNoSecrets(t, dir, s.logs())
}
