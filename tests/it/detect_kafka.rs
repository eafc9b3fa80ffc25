//! The detection stage on Kafka: readings in through the ingest, an alert that opens and closes
//! out on the alerts topic (JSON, key = motor, the deterministic id), and a late reading out on
//! the late topic with the window it missed, both also in the engine's tables.

use std::time::{Duration, Instant};

use rdkafka::Message as _;
use tessera_core::now_ms;
use tessera_core::{Channel, MotorId, Reading, SiteId};
use tessera_node::detect::{Detect, DetectConfig, build_engine};
use tessera_stream::alerts::alert_id;
use tessera_stream::{AlertEvent, AlertState};
use tessera_suite::{header, payload, producer, read_topic};
use tessera_workload::producer::WireFormat;

use crate::{embedded_kafka, ingest_config, start_ingest};

const QUERY: &str = "CREATE CONTINUOUS QUERY vib WITH (open_above = 3, close_below = 1) AS
  SELECT motor_id, window_start, avg(vibration_x_rms) AS vib,
         zscore(motor_id, window_start, avg(vibration_x_rms), 4) AS score
  FROM TUMBLE(telemetry, ts, INTERVAL '1 second') GROUP BY motor_id, window_start";

#[test]
fn alerts_and_late_readings_reach_their_topics() {
    let (kafka, brokers) = embedded_kafka(1, 2);
    kafka.create_topic("alerts", 1).expect("topic");
    kafka.create_topic("late", 1).expect("topic");
    let t0 = (now_ms() - 60_000).div_euclid(1000) * 1000;
    let reading = |i: usize, ts: i64, vib: f64| {
        let mut r = Reading {
            motor_id: MotorId::new("M1").expect("id"),
            site_id: SiteId::new("site-a").expect("id"),
            event_time_ms: ts,
            sequence: i as u64,
            channels: [None; 7],
            extra: Default::default(),
        };
        r.set(Channel::VibrationXRms, Some(vib));
        r
    };
    // Baseline 1.0, 1.1, 0.9, 1.0; a step to 2.0 (z ≈ 12: open); 2.0 (z = 1.5: stays open);
    // 1.0 (z ≈ −0.8: closes); then a reading 8.5 s behind the newest (late), and one that moves
    // the watermark past every window.
    let mut readings: Vec<Reading> = [1.0, 1.1, 0.9, 1.0, 2.0, 2.0, 1.0, 1.0, 1.0]
        .iter()
        .enumerate()
        .map(|(i, v)| reading(i, t0 + i as i64 * 1000, *v))
        .collect();
    readings.push(reading(9, t0 + 500, 50.0));
    readings.push(reading(10, t0 + 20_000, 1.0));
    let p = producer(&brokers, "telemetry", WireFormat::Protobuf).expect("producer");
    p.send_readings(&readings).expect("send");
    p.flush(Duration::from_secs(10)).expect("flush");

    let detect = DetectConfig {
        queries: vec![QUERY.into()],
        alerts_topic: "alerts".into(),
        late_topic: "late".into(),
        ..Default::default()
    };
    let engine = build_engine(&detect).expect("the query registers");
    let (ingest, batches) = start_ingest(ingest_config(&brokers, "detect-it", "telemetry", "dead-letters"));
    let (stage, detect_loop) = Detect::prepare(engine, &detect, &brokers, batches).expect("the stage starts");
    let detect_thread = tessera_node::lifecycle::StageThread::spawn(detect_loop).expect("its thread starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while stage.stats().alerts_sent < 2 || stage.stats().late_sent < 1 {
        assert!(Instant::now() < deadline, "no alerts/late readings: {:?}", stage.stats());
        std::thread::sleep(Duration::from_millis(50));
    }
    ingest.stop().expect("ingest stops");
    stage.request_stop();
    let engine = detect_thread.join().map_err(|f| (*f).into_error()).expect("stage stops");

    let alerts = read_topic(&brokers, "alerts", 2, Duration::from_secs(20)).expect("alerts topic");
    assert_eq!(alerts.len(), 2, "exactly one open and one close");
    let events: Vec<AlertEvent> =
        alerts.iter().map(|m| serde_json::from_slice(payload(m)).expect("alert JSON")).collect();
    assert_eq!(events[0].state, AlertState::Open);
    assert_eq!(events[0].window_start_ms, t0 + 4000);
    assert_eq!(events[1].state, AlertState::Close);
    assert_eq!(events[1].window_start_ms, t0 + 6000);
    for (m, e) in alerts.iter().zip(&events) {
        assert_eq!(m.key(), Some(&b"M1"[..]));
        assert_eq!(e.alert_id, alert_id("vib", "M1", t0 + 4000), "the id is (query, motor, opening window)");
        assert_eq!((e.query.as_str(), e.site_id.as_str()), ("vib", "site-a"));
        assert!((e.features["vib"] - if e.state == AlertState::Open { 2.0 } else { 1.0 }).abs() < 1e-12);
    }

    let late = read_topic(&brokers, "late", 1, Duration::from_secs(20)).expect("late topic");
    assert_eq!(late.len(), 1);
    assert_eq!(header(&late[0], "tessera.late.for").as_deref(), Some("tumble 1000 ms"));
    let json: serde_json::Value = serde_json::from_slice(payload(&late[0])).expect("reading JSON");
    assert_eq!(json["event_time_ms"], t0 + 500);

    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let count = |sql: &str| -> i64 {
        let b = rt.block_on(engine.sql(sql)).expect("sql");
        b[0].column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().expect("count").value(0)
    };
    assert_eq!(count("SELECT count(*) FROM late_events WHERE motor_id = 'M1'"), 1);
    assert_eq!(count("SELECT count(*) FROM alerts"), 2);
    assert_eq!(
        count("SELECT count(*) FROM motor_windows WHERE query = 'vib'"),
        9,
        "windows 0–8 closed; the newest is still open"
    );
    drop(kafka);
}

/// Data-quality alerts through a node's detection stage, each its own kind on the alerts
/// topic: a skewed clock, a sensor that dropped out, one that is stuck, and every motor silent
/// once the readings stop (issue 23, point 4); healthy motors get nothing else.
#[test]
fn data_quality_alerts_reach_the_alerts_topic() {
    let (kafka, brokers) = embedded_kafka(1, 2);
    kafka.create_topic("alerts", 1).expect("topic");
    kafka.create_topic("late", 1).expect("topic");
    const MOTORS: u32 = 40;
    let t0 = (now_ms() - 60_000).div_euclid(1000) * 1000;
    let mut readings = Vec::new();
    for s in 0..40i64 {
        for m in 1..=MOTORS {
            // M3's clock runs 2 minutes ahead; M1's temperature sensor dies at 10 s; M2's speed
            // reads 1480 exactly, again and again.
            let skew = if m == 3 { 120_000 } else { 0 };
            let mut r = Reading {
                motor_id: MotorId::new(format!("M{m}")).expect("id"),
                site_id: SiteId::new("site-a").expect("id"),
                event_time_ms: t0 + s * 1000 + skew,
                sequence: s as u64,
                channels: [None; 7],
                extra: Default::default(),
            };
            let noise = ((s * 7919 + i64::from(m) * 104_729) % 1000) as f64 / 1000.0;
            r.set(Channel::CurrentA, Some(10.0 + noise));
            r.set(Channel::TemperatureC, (m != 1 || s < 10).then_some(50.0 + noise));
            r.set(Channel::SpeedRpm, Some(if m == 2 { 1480.0 } else { 1480.0 + noise }));
            readings.push(r);
        }
    }
    let p = producer(&brokers, "telemetry", WireFormat::Protobuf).expect("producer");
    p.send_readings(&readings).expect("send");
    p.flush(Duration::from_secs(10)).expect("flush");

    let mut detect = DetectConfig {
        queries: vec![QUERY.into()],
        alerts_topic: "alerts".into(),
        late_topic: "late".into(),
        ..Default::default()
    };
    detect.data_quality.stuck_readings = 20;
    detect.data_quality.min_silence = Duration::from_secs(3);
    let engine = build_engine(&detect).expect("the query registers");
    let (ingest, batches) = start_ingest(ingest_config(&brokers, "detect-quality", "telemetry", "dead-letters"));
    let (stage, detect_loop) = Detect::prepare(engine, &detect, &brokers, batches).expect("the stage starts");
    let detect_thread = tessera_node::lifecycle::StageThread::spawn(detect_loop).expect("its thread starts");
    // Three alerts while the readings come in, then one `silent` per motor.
    let wanted = 3 + MOTORS as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stage.stats().alerts_sent < wanted {
        assert!(Instant::now() < deadline, "not every data-quality alert: {:?}", stage.stats());
        std::thread::sleep(Duration::from_millis(50));
    }
    ingest.stop().expect("ingest stops");
    stage.request_stop();
    detect_thread.join().map_err(|f| (*f).into_error()).expect("stage stops");
    assert_eq!(stage.stats().alerts_sent, wanted, "no other alert");

    let alerts = read_topic(&brokers, "alerts", wanted as usize, Duration::from_secs(10)).expect("alerts topic");
    let events: Vec<AlertEvent> =
        alerts.iter().map(|m| serde_json::from_slice(payload(m)).expect("alert JSON")).collect();
    let opened = |kind: &str| -> Vec<String> {
        let mut motors: Vec<String> = events
            .iter()
            .filter(|e| e.query == kind && e.state == AlertState::Open)
            .map(|e| e.motor_id.clone())
            .collect();
        motors.sort();
        motors
    };
    assert_eq!(opened("clock_skew"), ["M3"]);
    assert_eq!(opened("sensor_dropout.temperature_c"), ["M1"]);
    assert_eq!(opened("stuck_sensor.speed_rpm"), ["M2"]);
    assert_eq!(opened("silent").len(), MOTORS as usize, "every motor, once the readings stopped");
    let others: Vec<&AlertEvent> = events
        .iter()
        .filter(|e| {
            !["clock_skew", "sensor_dropout.temperature_c", "stuck_sensor.speed_rpm", "silent"]
                .contains(&e.query.as_str())
        })
        .filter(|e| e.query != "vib")
        .collect();
    assert!(others.is_empty(), "no other data-quality alert: {others:?}");
    let skew = events.iter().find(|e| e.query == "clock_skew").expect("skew");
    assert!(skew.score.is_some_and(|s| (90.0..=125.0).contains(&s)), "seconds of skew: {skew:?}");
}

/// Wear through a node's detection stage (issue 23, point 2): a motor whose bearing wears over
/// days, sampled every 10 minutes, is alerted (`wear.vibration_x_rms`, with the limit and the
/// time to it) more than a day before its vibration reaches the ISO 20816 class II C/D limit;
/// its healthy twin never is; `motor_health` shows the worn motor critical at the end.
#[test]
fn wear_is_alerted_a_day_before_the_limit_from_10_minute_readings() {
    let (kafka, brokers) = embedded_kafka(1, 2);
    kafka.create_topic("alerts", 1).expect("topic");
    kafka.create_topic("late", 1).expect("topic");
    const DAY: i64 = 24 * 3_600_000;
    const STEP: i64 = 10 * 60_000;
    let t0 = (now_ms() - 15 * DAY).div_euclid(STEP) * STEP;
    let (start, failure) = (3 * DAY, 12 * DAY);
    let noise = |i: i64, seed: i64| ((i * 7919 + seed * 104_729) % 1000) as f64 / 1000.0 - 0.5;
    let mut readings = Vec::new();
    let mut crossed = None;
    for i in 0..(14 * DAY / STEP) {
        let t = i * STEP;
        let x = ((t - start) as f64 / (failure - start) as f64).max(0.0);
        let worn = 1.5 + 5.6 * x * x + 0.3 * noise(i, 1);
        if worn >= 7.1 && crossed.is_none() {
            crossed = Some(t0 + t);
        }
        for (motor, vib) in [("worn", worn), ("twin", 1.5 + 0.3 * noise(i, 2))] {
            let mut r = Reading {
                motor_id: MotorId::new(motor).expect("id"),
                site_id: SiteId::new("site-a").expect("id"),
                event_time_ms: t0 + t,
                sequence: i as u64,
                channels: [None; 7],
                extra: Default::default(),
            };
            r.set(Channel::VibrationXRms, Some(vib));
            readings.push(r);
        }
    }
    let p = producer(&brokers, "telemetry", WireFormat::Protobuf).expect("producer");
    p.send_readings(&readings).expect("send");
    p.flush(Duration::from_secs(10)).expect("flush");

    let mut detect = DetectConfig {
        queries: vec![QUERY.into()],
        alerts_topic: "alerts".into(),
        late_topic: "late".into(),
        ..Default::default()
    };
    detect.data_quality.enabled = false;
    let engine = build_engine(&detect).expect("the query registers");
    let mut ingest = ingest_config(&brokers, "detect-wear", "telemetry", "dead-letters");
    ingest.validation.max_past_ms = 20 * DAY;
    let (ingest, batches) = start_ingest(ingest);
    let (stage, detect_loop) = Detect::prepare(engine, &detect, &brokers, batches).expect("the stage starts");
    let detect_thread = tessera_node::lifecycle::StageThread::spawn(detect_loop).expect("its thread starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while ingest.metrics().snapshot().readings_accepted < readings.len() as u64 {
        assert!(Instant::now() < deadline, "not every reading taken in: {:?}", stage.stats());
        std::thread::sleep(Duration::from_millis(50));
    }
    while stage.stats().engine.windows.first().map_or(0, |(_, w)| w.rows_in) < readings.len() as u64 {
        assert!(Instant::now() < deadline, "not every reading judged: {:?}", stage.stats());
        std::thread::sleep(Duration::from_millis(50));
    }
    ingest.stop().expect("ingest stops");
    stage.request_stop();
    let engine = detect_thread.join().map_err(|f| (*f).into_error()).expect("stage stops");

    let sent = stage.stats().alerts_sent as usize;
    let alerts = read_topic(&brokers, "alerts", sent, Duration::from_secs(10)).expect("alerts topic");
    let events: Vec<AlertEvent> =
        alerts.iter().map(|m| serde_json::from_slice(payload(m)).expect("alert JSON")).collect();
    let wear: Vec<&AlertEvent> = events.iter().filter(|e| e.query.starts_with("wear.")).collect();
    assert!(wear.iter().all(|e| e.motor_id == "worn"), "the twin is never alerted: {wear:?}");
    let first = wear.iter().find(|e| e.state == AlertState::Open).expect("the worn motor is alerted");
    assert_eq!(first.query, "wear.vibration_x_rms");
    assert_eq!(first.features["limit"], 7.1, "class II's C/D boundary");
    let lead_h = (crossed.expect("it reaches the limit") - first.window_start_ms) / 3_600_000;
    assert!(lead_h >= 24, "alerted only {lead_h} h before the limit");
    println!("wear: alerted {lead_h} h before the limit from 10-minute readings; {} wear events", wear.len());

    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let b = rt.block_on(engine.sql("SELECT status FROM motor_health WHERE motor_id = 'worn'")).expect("sql");
    let status = b[0].column(0).as_any().downcast_ref::<datafusion::arrow::array::StringArray>().expect("text");
    assert_eq!(status.value(0), "critical");
}
