// lintExposition finds each broken naming rule, and passes a well-formed exposition.
import t from 'tap';
import { lintExposition, parseExposition } from '../src/prom-lint.js';

const good = `# HELP app_requests_total Requests served
# TYPE app_requests_total counter
app_requests_total{route="/a",code="200"} 3
app_requests_total{route="/b",code="500"} 0
# HELP app_queue Requests waiting
# TYPE app_queue gauge
app_queue 2
# HELP app_latency_seconds Request latency
# TYPE app_latency_seconds histogram
app_latency_seconds_bucket{le="0.1"} 1
app_latency_seconds_bucket{le="1"} 2
app_latency_seconds_bucket{le="+Inf"} 2
app_latency_seconds_sum 0.7
app_latency_seconds_count 2
`;

t.test('a well-formed exposition passes', async (t) => {
  t.same(lintExposition(good), []);
  const fams = parseExposition(good).families;
  t.same(fams.map((f) => [f.name, f.type, f.samples.length]), [['app_requests_total', 'counter', 2], ['app_queue', 'gauge', 1], ['app_latency_seconds', 'histogram', 5]]);
  t.same(fams[0]!.samples[1]!.labels, { route: '/b', code: '500' });
});

const family = (name: string, type: string, sample = `${name} 1`, help = `# HELP ${name} something\n`) => `${help}# TYPE ${name} ${type}\n${sample}\n`;

t.test('each broken rule is reported', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['counter without _total', family('app_requests', 'counter'), /counter's name ends in _total/],
    ['gauge named _total', family('app_handles_total', 'gauge'), /only counters end in _total/],
    ['milliseconds', family('app_latency_milliseconds', 'gauge'), /'milliseconds' is not a base unit/],
    ['abbreviated unit', family('app_size_kb', 'gauge'), /'kb' is not a base unit/],
    ['camelCase', family('app_queueDepth', 'gauge'), /not snake_case/],
    ['colon', family('app:queue', 'gauge'), /reserved for recording rules/],
    ['reserved suffix', family('app_items_count', 'gauge'), /reserved for histograms and summaries/],
    ['type in the name', family('app_queue_gauge', 'gauge'), /repeats the type 'gauge'/],
    ['no HELP', family('app_queue', 'gauge', 'app_queue 1', ''), /no HELP text/],
    ['unknown type', family('app_queue', 'meter'), /is not counter, gauge/],
    ['sample without TYPE', 'app_orphan 1\n', /without a TYPE line/],
    ['negative counter', family('app_requests_total', 'counter', 'app_requests_total -1'), /negative/],
    ['bad label name', family('app_queue', 'gauge', 'app_queue{__name="x"} 1'), /bad label name/],
    ['le outside histograms', family('app_queue', 'gauge', 'app_queue{le="1"} 1'), /'le' is reserved/],
    ['repeated series', family('app_queue', 'gauge', 'app_queue{a="1"} 1\napp_queue{a="1"} 2'), /repeated/],
    ['not a number', family('app_queue', 'gauge', 'app_queue one'), /not a number/],
    ['no +Inf bucket', family('app_x_seconds', 'histogram', 'app_x_seconds_bucket{le="1"} 1\napp_x_seconds_count 1'), /no le="\+Inf" bucket/],
    ['not cumulative', family('app_x_seconds', 'histogram', 'app_x_seconds_bucket{le="1"} 3\napp_x_seconds_bucket{le="+Inf"} 2\napp_x_seconds_count 2'), /not cumulative/],
    ['count differs', family('app_x_seconds', 'histogram', 'app_x_seconds_bucket{le="+Inf"} 2\napp_x_seconds_count 3'), /_count 3 differs/],
  ];
  for (const [what, text, want] of cases) {
    const problems = lintExposition(text);
    t.ok(problems.some((p) => want.test(p)), `${what}: ${problems.join('; ') || 'nothing reported'}`);
  }
});
