// Two Node SSE clients nobody here wrote the server for: the `eventsource` npm package
// (v2, the classic `new EventSource(url, { headers })` API DashClaw's scripts use) and a
// fetch-stream reader in the style of DashClaw's SDK, which matches lines by the literal
// prefixes `id: `, `event: `, `data: ` (so a missing space after the colon would break it).
import EventSource from 'eventsource';

/** Common shape: { events: [{type, id, data}], opens, errors, close() }. */
export function openEventSource(url, headers, types) {
  const es = new EventSource(url, { headers });
  const state = { events: [], opens: 0, errors: [], es };
  const record = (e) => state.events.push({ type: e.type, id: e.lastEventId, data: e.data });
  es.onmessage = record;
  for (const t of types) es.addEventListener(t, record);
  es.onopen = () => { state.opens += 1; };
  es.onerror = (e) => { state.errors.push(e?.status ?? e?.message ?? 'error'); };
  state.close = () => es.close();
  return state;
}

export function openFetchReader(url, headers) {
  const controller = new AbortController();
  const state = { events: [], opens: 0, errors: [], status: null, ended: false, lastEventId: '' };
  state.close = () => controller.abort();
  state.done = (async () => {
    try {
      const res = await fetch(url, { headers: { accept: 'text/event-stream', ...headers }, signal: controller.signal });
      state.status = res.status;
      if (!res.ok) {
        state.errors.push(`HTTP ${res.status}: ${await res.text()}`);
        return;
      }
      state.opens += 1;
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      let id = null;
      let type = null;
      let data = null;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        const lines = buffer.split('\n');
        buffer = lines.pop();
        for (const raw of lines) {
          const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
          if (line.startsWith('id: ')) id = line.slice(4);
          else if (line.startsWith('event: ')) type = line.slice(7);
          else if (line.startsWith('data: ')) data = line.slice(6);
          else if (line === '') {
            if (data !== null) {
              if (id !== null) state.lastEventId = id;
              state.events.push({ type: type ?? 'message', id: id ?? '', data });
            }
            id = null;
            type = null;
            data = null;
          }
        }
      }
      state.ended = true;
    } catch (e) {
      if (e.name !== 'AbortError') state.errors.push(String(e));
    }
  })();
  return state;
}
