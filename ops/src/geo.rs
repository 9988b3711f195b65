//! GeoJSON values as expressions compare them (`CmpGeo`, op 8): a point within a region, or a
//! region containing a point. Parses the shapes Aerospike accepts (Point, Polygon,
//! MultiPolygon and its own AeroCircle) from a GeoJSON particle or literal.
//!
//! Regions are judged on longitude/latitude as a plane (ray casting) and circles by
//! great-circle distance; Aerospike uses S2 cells, which agree for regions that do not span
//! a pole or the antimeridian. Must never panic on hostile JSON: every shape is checked, and
//! the number of vertices is bounded.

use crate::error::{OpError, OpResult};

/// Mean Earth radius in meters, as S2 uses for AeroCircle radii.
pub const EARTH_RADIUS_METERS: f64 = 6_371_000.0;
/// Most vertices one region may have (Aerospike caps region cells; this bounds our work).
pub const REGION_VERTICES_MAX: usize = 65_536;

/// One parsed GeoJSON shape; coordinates are (longitude, latitude) in degrees.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Point(f64, f64),
    /// Center and radius in meters.
    Circle(f64, f64, f64),
    /// Polygons, each an outer ring followed by its holes.
    Polygons(Vec<Vec<Vec<(f64, f64)>>>),
}

fn bad<T>(why: &'static str) -> OpResult<T> {
    Err(OpError::Parameter(why))
}

/// The JSON text of a GeoJSON particle or literal: a stored particle starts with a flags byte,
/// a big-endian cell count and that many 8-byte cell ids before the JSON; a literal is the
/// JSON alone.
fn json_of(bytes: &[u8]) -> OpResult<&[u8]> {
    if bytes
        .first()
        .is_some_and(|b| *b == b'{' || b.is_ascii_whitespace())
    {
        return Ok(bytes);
    }
    if bytes.len() < 3 {
        return bad("GeoJSON value too short");
    }
    let cells = usize::from(u16::from_be_bytes([bytes[1], bytes[2]]));
    let start = 3 + cells * 8;
    bytes
        .get(start..)
        .map_or_else(|| bad("GeoJSON cell ids run past the value"), Ok)
}

fn coord(v: &serde_json::Value) -> OpResult<(f64, f64)> {
    match v.as_array().map(Vec::as_slice) {
        Some([lon, lat, ..]) => match (lon.as_f64(), lat.as_f64()) {
            (Some(lon), Some(lat)) if lon.abs() <= 180.0 && lat.abs() <= 90.0 => Ok((lon, lat)),
            _ => bad("GeoJSON coordinate out of range"),
        },
        _ => bad("GeoJSON coordinate is not [longitude, latitude]"),
    }
}

fn polygon(v: &serde_json::Value, vertices: &mut usize) -> OpResult<Vec<Vec<(f64, f64)>>> {
    let Some(rings) = v.as_array() else {
        return bad("GeoJSON polygon is not a list of rings");
    };
    if rings.is_empty() {
        return bad("GeoJSON polygon has no ring");
    }
    rings
        .iter()
        .map(|ring| {
            let Some(points) = ring.as_array() else {
                return bad("GeoJSON ring is not a list of points");
            };
            *vertices += points.len();
            if points.len() < 4 || *vertices > REGION_VERTICES_MAX {
                return bad("GeoJSON ring has under 4 or too many points");
            }
            points.iter().map(coord).collect()
        })
        .collect()
}

/// Parses a GeoJSON particle or literal into a shape.
pub fn parse(bytes: &[u8]) -> OpResult<Shape> {
    let json: serde_json::Value = serde_json::from_slice(json_of(bytes)?)
        .map_err(|_| OpError::Parameter("invalid GeoJSON"))?;
    let coords = &json["coordinates"];
    let mut vertices = 0;
    match json["type"].as_str() {
        Some("Point") => {
            let (lon, lat) = coord(coords)?;
            Ok(Shape::Point(lon, lat))
        }
        Some("AeroCircle") => match coords.as_array().map(Vec::as_slice) {
            Some([center, radius]) => {
                let (lon, lat) = coord(center)?;
                match radius.as_f64() {
                    Some(r) if r >= 0.0 && r.is_finite() => Ok(Shape::Circle(lon, lat, r)),
                    _ => bad("AeroCircle radius is not a non-negative number"),
                }
            }
            _ => bad("AeroCircle needs [[longitude, latitude], radius]"),
        },
        Some("Polygon") => Ok(Shape::Polygons(vec![polygon(coords, &mut vertices)?])),
        Some("MultiPolygon") => match coords.as_array() {
            Some(polys) if !polys.is_empty() => Ok(Shape::Polygons(
                polys
                    .iter()
                    .map(|p| polygon(p, &mut vertices))
                    .collect::<OpResult<_>>()?,
            )),
            _ => bad("MultiPolygon has no polygon"),
        },
        _ => bad("unsupported GeoJSON type"),
    }
}

/// Great-circle distance in meters (haversine).
fn distance_meters((lon1, lat1): (f64, f64), (lon2, lat2): (f64, f64)) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_METERS * a.sqrt().min(1.0).asin()
}

/// Even-odd ray casting on (longitude, latitude).
fn in_ring(ring: &[(f64, f64)], (x, y): (f64, f64)) -> bool {
    let mut inside = false;
    let mut j = ring.len() - 1;
    for i in 0..ring.len() {
        let ((xi, yi), (xj, yj)) = (ring[i], ring[j]);
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

fn region_contains(region: &Shape, p: (f64, f64)) -> bool {
    match region {
        Shape::Point(..) => false,
        Shape::Circle(lon, lat, r) => distance_meters((*lon, *lat), p) <= *r,
        Shape::Polygons(polys) => polys
            .iter()
            .any(|rings| in_ring(&rings[0], p) && !rings[1..].iter().any(|hole| in_ring(hole, p))),
    }
}

/// CmpGeo(a, b): true when a point lies within a region, whichever side each is on. Two
/// points or two regions never match.
pub fn matches(a: &Shape, b: &Shape) -> bool {
    match (a, b) {
        (Shape::Point(lon, lat), region) | (region, Shape::Point(lon, lat)) => {
            region_contains(region, (*lon, *lat))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_within_circles_and_polygons() {
        let point = parse(br#"{"type":"Point","coordinates":[-132.0,37.5]}"#).unwrap();
        let circle = parse(br#"{"type":"AeroCircle","coordinates":[[-132.0,37.5],1000]}"#).unwrap();
        assert!(matches(&point, &circle));
        assert!(matches(&circle, &point));
        let far = parse(br#"{"type":"Point","coordinates":[-60.5,20]}"#).unwrap();
        assert!(!matches(&far, &circle));
        let square = br#"{"type":"Polygon","coordinates":[[[-122.5,37.0],[-121.0,37.0],
            [-121.0,38.08],[-122.5,38.08],[-122.5,37.0]]]}"#;
        let square = parse(square).unwrap();
        let inside = Shape::Point(-122.0, 37.5);
        assert!(matches(&inside, &square));
        assert!(!matches(&far, &square));
        assert!(!matches(&point, &point));
        // A stored particle: flags, a cell count of 1 and one cell id before the JSON.
        let mut stored = vec![0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        stored.extend_from_slice(br#"{"type":"Point","coordinates":[-122.0,37.5]}"#);
        assert_eq!(parse(&stored).unwrap(), inside);
    }

    #[test]
    fn bad_geojson_is_a_parameter_error() {
        for bad in [
            &b"{"[..],
            br#"{"type":"Point","coordinates":[500,0]}"#,
            br#"{"type":"Line","coordinates":[]}"#,
            br#"{"type":"Polygon","coordinates":[[[0,0],[1,1]]]}"#,
            br#"{"type":"AeroCircle","coordinates":[[0,0],-1]}"#,
            &[0, 0, 9][..],
        ] {
            assert_eq!(parse(bad).unwrap_err().result_code(), 4, "{bad:?}");
        }
    }
}
